package kubee2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podwall/podwall/test/kube/cluster"
)

// rbacFile is the daemon's least-privilege RBAC, relative to this package.
var rbacFile = filepath.Join("..", "..", "..", "install", "rbac.yaml")

// readRBAC decodes every document of the RBAC manifest at path (YAML, "---"
// separated) into typed objects. Kinds other than ServiceAccount,
// ClusterRole, ClusterRoleBinding, Role and RoleBinding are an error, so a
// new kind in the file is noticed here rather than silently skipped.
func readRBAC(path string) ([]runtime.Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read rbac: %w", err)
	}
	defer f.Close()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(f))
	decode := scheme.Codecs.UniversalDeserializer().Decode
	var objs []runtime.Object
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read rbac %s: document %d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("read rbac %s: document %d: %w", path, i, err)
		}
		switch obj.(type) {
		case *corev1.ServiceAccount, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *rbacv1.Role, *rbacv1.RoleBinding:
		default:
			return nil, fmt.Errorf("read rbac %s: document %d: unexpected kind %s", path, i, gvk.Kind)
		}
		objs = append(objs, obj)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("read rbac %s: no objects", path)
	}
	return objs, nil
}

// stripComments drops the comment lines of a YAML document.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
	}
	return out
}

// applyRBAC creates the objects of the RBAC manifest at path through client
// (an object that exists already is left as it is).
func applyRBAC(ctx context.Context, client kubernetes.Interface, path string) error {
	objs, err := readRBAC(path)
	if err != nil {
		return err
	}
	opts := metav1.CreateOptions{}
	for _, obj := range objs {
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.ClusterRole:
			_, err = client.RbacV1().ClusterRoles().Create(ctx, o, opts)
		case *rbacv1.ClusterRoleBinding:
			_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
		case *rbacv1.Role:
			_, err = client.RbacV1().Roles(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.RoleBinding:
			_, err = client.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, opts)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apply %s: %w", path, err)
		}
	}
	return nil
}

// daemonAccount returns the namespace and name of the one ServiceAccount the
// RBAC manifest at path defines: the account podwalld runs as.
func daemonAccount(path string) (namespace, name string, err error) {
	objs, err := readRBAC(path)
	if err != nil {
		return "", "", err
	}
	var accounts []*corev1.ServiceAccount
	for _, obj := range objs {
		if sa, ok := obj.(*corev1.ServiceAccount); ok {
			accounts = append(accounts, sa)
		}
	}
	if len(accounts) != 1 {
		return "", "", fmt.Errorf("%s defines %d ServiceAccounts, want 1", path, len(accounts))
	}
	return accounts[0].Namespace, accounts[0].Name, nil
}

// daemonKubeconfig returns a kubeconfig for podwalld's ServiceAccount of
// install/rbac.yaml on c: a fresh token, and only the rights the file grants.
func daemonKubeconfig(ctx context.Context, c *cluster.Cluster) (string, error) {
	namespace, name, err := daemonAccount(rbacFile)
	if err != nil {
		return "", err
	}
	return c.ServiceAccountKubeconfig(ctx, namespace, name)
}
