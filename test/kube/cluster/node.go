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
	return c.CreateNodeWithIPs(ctx, name, internalIP)
}

// CreateNodeWithIPs is CreateNode for a node with several InternalIP
// addresses, at most one per family (a dual-stack node), the first one
// primary.
func (c *Cluster) CreateNodeWithIPs(ctx context.Context, name string, internalIPs ...netip.Addr) error {
	if len(internalIPs) == 0 {
		return fmt.Errorf("create node %q: no internal IP", name)
	}
	var addresses []corev1.NodeAddress
	seen := map[bool]bool{} // by Is4
	for _, ip := range internalIPs {
		if !ip.IsValid() {
			return fmt.Errorf("create node %q: no internal IP", name)
		}
		ip = ip.Unmap()
		if seen[ip.Is4()] {
			return fmt.Errorf("create node %q: internal IPs %v: at most one per family", name, internalIPs)
		}
		seen[ip.Is4()] = true
		addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
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
			Addresses: append(addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name}),
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
