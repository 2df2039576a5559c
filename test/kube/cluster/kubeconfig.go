package cluster

import (
	"context"
	"fmt"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// serviceAccountTokenSeconds is the lifetime of the tokens
// ServiceAccountKubeconfig requests.
const serviceAccountTokenSeconds = 24 * 3600

// writeKubeconfig writes a kubeconfig for server (CA caPEM) authenticating
// with a bearer token.
func writeKubeconfig(path, server string, caPEM []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["podwall"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "podwall", AuthInfo: user}
	cfg.CurrentContext = user
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// ServiceAccountKubeconfig creates the ServiceAccount namespace/name (an
// existing one is reused; the namespace must exist), requests a token for it
// through the TokenRequest API (valid 24 h) and writes a kubeconfig with it
// in the cluster's directory. The account has only the permissions RBAC
// grants it, so least-privilege roles can be tested.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	_, err := c.client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("service account kubeconfig %s/%s: %w", namespace, name, err)
	}
	expiration := int64(serviceAccountTokenSeconds)
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiration},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("service account kubeconfig %s/%s: token request: %w", namespace, name, err)
	}
	path := filepath.Join(c.dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	user := "system:serviceaccount:" + namespace + ":" + name
	if err := writeKubeconfig(path, c.apiURL, c.pki.caPEM, user, tr.Status.Token); err != nil {
		return "", fmt.Errorf("service account kubeconfig %s/%s: %w", namespace, name, err)
	}
	return path, nil
}
