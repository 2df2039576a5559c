// Package kubelet plays the kubelet of one node for podwall's cluster test
// bed: it creates Pod objects bound to the node through a real API server,
// runs the CNI chain for them through a test/bed Bed (network namespaces
// plumbed as a container runtime would, with the pod's real UID in CNI_ARGS),
// writes the status a kubelet would (Running, podIPs, Ready), and serves every
// container port inside the pod's netns. It runs no containers, probes or
// restarts, and does not watch: a pod deleted through the API keeps its netns
// until DeletePod. It must not import podwall's own packages.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/test/bed"
)

// containerIDScheme prefixes the container IDs of the statuses, where a real
// kubelet writes containerd:// and the like.
const containerIDScheme = "podwall-test-bed://"

// deleteTimeout bounds the clean-up of a pod whose ADD or status failed.
const deleteTimeout = 60 * time.Second

// Kubelet runs pods of one node on a bed. Its methods are safe for
// concurrent use.
type Kubelet struct {
	client   kubernetes.Interface
	bed      *bed.Bed
	nodeName string

	mu   sync.Mutex
	pods map[string]*bed.Pod // by namespace/name
}

// New returns a kubelet for node nodeName that runs pods on b through client.
// The Node object is the caller's (see cluster.CreateNode).
func New(client kubernetes.Interface, b *bed.Bed, nodeName string) *Kubelet {
	return &Kubelet{client: client, bed: b, nodeName: nodeName, pods: map[string]*bed.Pod{}}
}

// NodeName returns the node the kubelet plays.
func (k *Kubelet) NodeName() string { return k.nodeName }

// Pod returns the bed pod of namespace/name, or nil when the kubelet does not
// run it.
func (k *Kubelet) Pod(namespace, name string) *bed.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[namespace+"/"+name]
}

// RunPod creates pod (a copy, bound to the kubelet's node; namespace
// "default" when empty) through the API, runs CNI ADD for it with
// K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID (the object's UID) and
// K8S_POD_INFRA_CONTAINER_ID, starts a server for every container port (by
// its protocol, TCP when unset), and writes the status of a running, ready
// pod: phase Running, podIP(s), hostIP(s) from the Node's InternalIPs, the
// PodScheduled, Initialized, ContainersReady and Ready conditions and ready
// container statuses. If anything after the create fails, what was done is
// undone (CNI DEL, the object deleted) and the error returned.
func (k *Kubelet) RunPod(ctx context.Context, pod *corev1.Pod) (*bed.Pod, error) {
	if pod == nil {
		return nil, errors.New("run pod: nil pod")
	}
	pod = pod.DeepCopy()
	if pod.Namespace == "" {
		pod.Namespace = metav1.NamespaceDefault
	}
	key := pod.Namespace + "/" + pod.Name
	if pod.Spec.HostNetwork {
		return nil, fmt.Errorf("run pod %s: hostNetwork pods are not supported (they get no CNI attachment)", key)
	}
	ports, err := servePorts(pod)
	if err != nil {
		return nil, fmt.Errorf("run pod %s: %w", key, err)
	}
	k.mu.Lock()
	_, running := k.pods[key]
	k.mu.Unlock()
	if running {
		return nil, fmt.Errorf("run pod %s: already running", key)
	}

	pod.Spec.NodeName = k.nodeName
	created, err := k.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("run pod %s: create: %w", key, err)
	}

	bp, addErr := k.bed.AddPod(ctx, created.Namespace, created.Name, bed.PodOptions{UID: string(created.UID)})
	if addErr != nil {
		return nil, errors.Join(fmt.Errorf("run pod %s: %w", key, addErr), k.deleteObject(created))
	}
	undo := func(err error) error {
		delCtx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
		defer cancel()
		return errors.Join(fmt.Errorf("run pod %s: %w", key, err), k.bed.DelPod(delCtx, bp), k.deleteObject(created))
	}
	if len(ports) > 0 {
		if err := bp.Serve(ports...); err != nil {
			return nil, undo(err)
		}
	}
	if err := k.writeRunningStatus(ctx, created, bp); err != nil {
		return nil, undo(fmt.Errorf("write status: %w", err))
	}
	k.mu.Lock()
	k.pods[key] = bp
	k.mu.Unlock()
	return bp, nil
}

// runningContainers returns the containers of a running pod: the app
// containers and the sidecars (init containers with restartPolicy Always).
func runningContainers(pod *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if isSidecar(c) {
			out = append(out, c)
		}
	}
	return append(out, pod.Spec.Containers...)
}

func isSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// servePorts lists the distinct ports of the pod's running containers.
func servePorts(pod *corev1.Pod) ([]bed.ServePort, error) {
	var out []bed.ServePort
	seen := map[bed.ServePort]bool{}
	for _, c := range runningContainers(pod) {
		for _, p := range c.Ports {
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			sp := bed.ServePort{Protocol: proto, Port: int(p.ContainerPort)}
			if p.ContainerPort < 1 || p.ContainerPort > 65535 {
				return nil, fmt.Errorf("container %s: port %d out of range", c.Name, p.ContainerPort)
			}
			if seen[sp] {
				continue
			}
			seen[sp] = true
			out = append(out, sp)
		}
	}
	return out, nil
}

// writeRunningStatus writes the status of a running, ready pod with bp's
// addresses through the status subresource.
func (k *Kubelet) writeRunningStatus(ctx context.Context, pod *corev1.Pod, bp *bed.Pod) error {
	hostIPs, err := k.nodeInternalIPs(ctx)
	if err != nil {
		return err
	}
	now := metav1.Now()
	status := corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &now,
	}
	for _, a := range bp.IPs {
		status.PodIPs = append(status.PodIPs, corev1.PodIP{IP: a.String()})
	}
	status.PodIP = status.PodIPs[0].IP
	for _, a := range hostIPs {
		status.HostIPs = append(status.HostIPs, corev1.HostIP{IP: a.String()})
	}
	if len(status.HostIPs) > 0 {
		status.HostIP = status.HostIPs[0].IP
	}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		status.Conditions = append(status.Conditions, corev1.PodCondition{
			Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now,
		})
	}
	running := func(c corev1.Container) corev1.ContainerStatus {
		started := true
		return corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     c.Image,
			ContainerID: containerIDScheme + bp.ContainerID,
			Ready:       true,
			Started:     &started,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}
	}
	for _, c := range pod.Spec.InitContainers {
		cs := running(c)
		if !isSidecar(c) {
			started := false
			cs.Started = &started
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				Reason: "Completed", StartedAt: now, FinishedAt: now,
				ContainerID: cs.ContainerID,
			}}
		}
		status.InitContainerStatuses = append(status.InitContainerStatuses, cs)
	}
	for _, c := range pod.Spec.Containers {
		status.ContainerStatuses = append(status.ContainerStatuses, running(c))
	}
	// The object just created: its resourceVersion guards against a racing
	// writer; on conflict take the newest and write again.
	obj := pod.DeepCopy()
	for attempt := 0; ; attempt++ {
		status.QOSClass = obj.Status.QOSClass // set by the API server, immutable
		obj.Status = status
		_, err := k.client.CoreV1().Pods(obj.Namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return err
		}
		obj, err = k.client.CoreV1().Pods(obj.Namespace).Get(ctx, obj.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
	}
}

// nodeInternalIPs returns the InternalIP addresses of the kubelet's Node, or
// none when the Node has none; a missing Node is an error.
func (k *Kubelet) nodeInternalIPs(ctx context.Context) ([]netip.Addr, error) {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.nodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", k.nodeName, err)
	}
	var out []netip.Addr
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip)
		}
	}
	return out, nil
}

// deleteObject deletes pod's object at once (grace period 0, this UID only).
func (k *Kubelet) deleteObject(pod *corev1.Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
	defer cancel()
	zero := int64(0)
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod object %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// DeletePod runs CNI DEL for namespace/name (stopping its servers and
// removing its netns), then deletes the Pod object with grace period 0 and
// waits until it is gone. A pod the kubelet does not run is only deleted
// through the API; one that exists in neither place is an error.
func (k *Kubelet) DeletePod(ctx context.Context, namespace, name string) error {
	key := namespace + "/" + name
	k.mu.Lock()
	bp := k.pods[key]
	delete(k.pods, key)
	k.mu.Unlock()

	var errs []error
	if bp != nil {
		errs = append(errs, k.bed.DelPod(ctx, bp))
	}
	zero := int64(0)
	err := k.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	switch {
	case apierrors.IsNotFound(err):
		if bp == nil {
			errs = append(errs, fmt.Errorf("no such pod"))
		}
	case err != nil:
		errs = append(errs, err)
	default:
		errs = append(errs, waitGone(ctx, k.client, namespace, name))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete pod %s: %w", key, err)
	}
	return nil
}

func waitGone(ctx context.Context, client kubernetes.Interface, namespace, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, deleteTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait until the object is gone: %w", err)
	}
	return nil
}

// Close deletes every pod the kubelet runs (see DeletePod), going on past
// failures.
func (k *Kubelet) Close(ctx context.Context) error {
	k.mu.Lock()
	var keys [][2]string
	for _, bp := range k.pods {
		keys = append(keys, [2]string{bp.Namespace, bp.Name})
	}
	k.mu.Unlock()
	var errs []error
	for _, key := range keys {
		errs = append(errs, k.DeletePod(ctx, key[0], key[1]))
	}
	return errors.Join(errs...)
}
