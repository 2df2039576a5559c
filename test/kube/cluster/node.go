package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CreateNode creates a Ready Node object named name with internalIP as its
// InternalIP address, as a kubelet registering would. The controller manager
// needs it for EndpointSlices of pods on that node, kube-proxy to program
// anything. No node lifecycle controller runs, so it stays Ready.
func (c *Cluster) CreateNode(ctx context.Context, name string, internalIP netip.Addr) error {
	if !internalIP.IsValid() {
		return fmt.Errorf("create node %q: no internal IP", name)
	}
	now := metav1.Now()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				corev1.LabelHostname:   name,
				corev1.LabelOSStable:   "linux",
				corev1.LabelArchStable: runtime.GOARCH,
			},
		},
		// Status is kept on create (it is not on update).
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{
				Type:               corev1.NodeReady,
				Status:             corev1.ConditionTrue,
				Reason:             "KubeletReady",
				Message:            "podwall test bed node",
				LastHeartbeatTime:  now,
				LastTransitionTime: now,
			}},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: internalIP.Unmap().String()},
				{Type: corev1.NodeHostName, Address: name},
			},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion:          KubeVersion,
				OperatingSystem:         "linux",
				Architecture:            runtime.GOARCH,
				ContainerRuntimeVersion: "podwall-test-bed://0",
			},
		},
	}
	if _, err := c.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %q: %w", name, err)
	}
	return nil
}
