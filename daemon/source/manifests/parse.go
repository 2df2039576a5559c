package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"

	"github.com/podwall/podwall/daemon/source"
)

// defaultNamespace is where namespaced objects without a namespace go.
const defaultNamespace = "default"

const (
	apiV1          = "v1"
	apiNetworkV1   = "networking.k8s.io/v1"
	apiDiscoveryV1 = "discovery.k8s.io/v1"
)

// parseFile parses the documents of the file at path into objects. Any
// problem makes the whole file broken; every problem found is returned, but
// parsing stops at the first syntax error.
func parseFile(path string, data []byte) ([]object, []source.Error) {
	var objects []object
	var errs []source.Error
	dec := yamlutil.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for doc := 1; ; {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			errs = append(errs, source.Error{
				Object: fmt.Sprintf("%s: document %d", path, doc),
				Err:    fmt.Errorf("parse: %w", err),
			})
			break
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || string(raw) == "null" {
			continue // empty document, e.g. a trailing "---"
		}
		p := documentParser{path: path, where: fmt.Sprintf("%s: document %d", path, doc)}
		p.parse(raw, true)
		objects = append(objects, p.objects...)
		errs = append(errs, p.errs...)
		doc++
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return objects, nil
}

// documentParser collects the objects and problems of one document.
type documentParser struct {
	path    string
	where   string // "path: document N", for problems before a name is known
	objects []object
	errs    []source.Error
}

func (p *documentParser) fail(where string, err error) {
	p.errs = append(p.errs, source.Error{Object: where, Err: err})
}

// parse parses one object (or, when lists is true, a List of objects).
func (p *documentParser) parse(raw []byte, lists bool) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		p.fail(p.where, fmt.Errorf("not a Kubernetes object: %w", err))
		return
	}
	if tm.Kind == "" {
		p.fail(p.where, errors.New("missing kind"))
		return
	}
	isList := false
	switch {
	case tm.APIVersion == apiV1 && tm.Kind == "Namespace":
		var ns corev1.Namespace
		if p.decode(raw, &ns) {
			p.addNamespace(&ns, p.where)
		}
	case tm.APIVersion == apiV1 && tm.Kind == "Pod":
		var pod corev1.Pod
		if p.decode(raw, &pod) {
			p.addPod(&pod, p.where)
		}
	case tm.APIVersion == apiNetworkV1 && tm.Kind == "NetworkPolicy":
		var np networkingv1.NetworkPolicy
		if p.decode(raw, &np) {
			p.addPolicy(&np, p.where)
		}
	case tm.APIVersion == apiV1 && tm.Kind == "Service":
		var svc corev1.Service
		if p.decode(raw, &svc) {
			p.addService(&svc, p.where)
		}
	case tm.APIVersion == apiDiscoveryV1 && tm.Kind == "EndpointSlice":
		var slice discoveryv1.EndpointSlice
		if p.decode(raw, &slice) {
			p.addEndpointSlice(&slice, p.where)
		}
	case tm.APIVersion == apiNetworkV1 && tm.Kind == "ServiceCIDR":
		var c networkingv1.ServiceCIDR
		if p.decode(raw, &c) {
			p.addServiceCIDR(&c, p.where)
		}
	case tm.APIVersion == apiV1 && tm.Kind == "List":
		isList = true
		var list metav1.List
		if lists && p.decode(raw, &list) {
			for i, item := range list.Items {
				p.parseItem(item.Raw, i)
			}
		}
	case tm.APIVersion == apiV1 && tm.Kind == "NamespaceList":
		isList = true
		var list corev1.NamespaceList
		if lists && p.decode(raw, &list) {
			for i := range list.Items {
				if p.checkItemKind(list.Items[i].TypeMeta, "Namespace", i) {
					p.addNamespace(&list.Items[i], p.itemWhere(i))
				}
			}
		}
	case tm.APIVersion == apiV1 && tm.Kind == "PodList":
		isList = true
		var list corev1.PodList
		if lists && p.decode(raw, &list) {
			for i := range list.Items {
				if p.checkItemKind(list.Items[i].TypeMeta, "Pod", i) {
					p.addPod(&list.Items[i], p.itemWhere(i))
				}
			}
		}
	case tm.APIVersion == apiNetworkV1 && tm.Kind == "NetworkPolicyList":
		isList = true
		var list networkingv1.NetworkPolicyList
		if lists && p.decode(raw, &list) {
			for i := range list.Items {
				if p.checkItemKind(list.Items[i].TypeMeta, "NetworkPolicy", i) {
					p.addPolicy(&list.Items[i], p.itemWhere(i))
				}
			}
		}
	case tm.APIVersion == apiV1 && tm.Kind == "ServiceList":
		isList = true
		var list corev1.ServiceList
		if lists && p.decode(raw, &list) {
			for i := range list.Items {
				if p.checkItemKind(list.Items[i].TypeMeta, "Service", i) {
					p.addService(&list.Items[i], p.itemWhere(i))
				}
			}
		}
	case tm.APIVersion == apiDiscoveryV1 && tm.Kind == "EndpointSliceList":
		isList = true
		var list discoveryv1.EndpointSliceList
		if lists && p.decode(raw, &list) {
			for i := range list.Items {
				if p.checkItemKind(list.Items[i].TypeMeta, "EndpointSlice", i) {
					p.addEndpointSlice(&list.Items[i], p.itemWhere(i))
				}
			}
		}
	case tm.APIVersion == apiNetworkV1 && tm.Kind == "ServiceCIDRList":
		isList = true
		var list networkingv1.ServiceCIDRList
		if lists && p.decode(raw, &list) {
			for i := range list.Items {
				if p.checkItemKind(list.Items[i].TypeMeta, "ServiceCIDR", i) {
					p.addServiceCIDR(&list.Items[i], p.itemWhere(i))
				}
			}
		}
	default:
		p.fail(p.where, fmt.Errorf("unsupported kind %q of apiVersion %q (want Namespace, Pod, NetworkPolicy, Service, EndpointSlice, ServiceCIDR or a List of them)", tm.Kind, tm.APIVersion))
	}
	if isList && !lists {
		p.fail(p.where, fmt.Errorf("a %s inside a List is not supported", tm.Kind))
	}
}

func (p *documentParser) itemWhere(i int) string {
	return fmt.Sprintf("%s item %d", p.where, i)
}

// parseItem parses item i of a List, which must not itself be a list.
func (p *documentParser) parseItem(raw []byte, i int) {
	item := documentParser{path: p.path, where: p.itemWhere(i)}
	item.parse(raw, false)
	p.objects = append(p.objects, item.objects...)
	p.errs = append(p.errs, item.errs...)
}

// checkItemKind checks the optional kind of an item of a typed list.
func (p *documentParser) checkItemKind(tm metav1.TypeMeta, kind string, i int) bool {
	if tm.Kind != "" && tm.Kind != kind {
		p.fail(p.itemWhere(i), fmt.Errorf("kind %q in a %sList", tm.Kind, kind))
		return false
	}
	return true
}

// decode decodes raw into obj strictly: unknown and duplicate fields are
// errors, as with kubectl's strict validation.
func (p *documentParser) decode(raw []byte, obj any) bool {
	strict, err := sigsjson.UnmarshalStrict(raw, obj)
	if err == nil {
		err = errors.Join(strict...)
	}
	if err != nil {
		p.fail(p.where, fmt.Errorf("decode: %w", err))
		return false
	}
	return true
}

func (p *documentParser) addNamespace(ns *corev1.Namespace, where string) {
	if ns.Name == "" {
		p.fail(where, errors.New("Namespace: missing metadata.name"))
		return
	}
	p.objects = append(p.objects, object{kind: "Namespace", name: ns.Name, ns: source.NamespaceFromAPI(ns)})
}

func (p *documentParser) addPod(pod *corev1.Pod, where string) {
	if pod.Name == "" {
		p.fail(where, errors.New("Pod: missing metadata.name"))
		return
	}
	if pod.Namespace == "" {
		pod.Namespace = defaultNamespace
	}
	p.objects = append(p.objects, object{kind: "Pod", namespace: pod.Namespace, name: pod.Name, pod: source.PodFromAPI(pod)})
}

func (p *documentParser) addPolicy(np *networkingv1.NetworkPolicy, where string) {
	if np.Name == "" {
		p.fail(where, errors.New("NetworkPolicy: missing metadata.name"))
		return
	}
	if np.Namespace == "" {
		np.Namespace = defaultNamespace
	}
	o := object{kind: "NetworkPolicy", namespace: np.Namespace, name: np.Name}
	valid, err := source.PolicyFromAPI(np)
	if err != nil {
		p.fail(p.path+": "+o.id(), fmt.Errorf("invalid: %w", err))
		return
	}
	o.np = valid
	p.objects = append(p.objects, o)
}

func (p *documentParser) addService(svc *corev1.Service, where string) {
	if svc.Name == "" {
		p.fail(where, errors.New("Service: missing metadata.name"))
		return
	}
	if svc.Namespace == "" {
		svc.Namespace = defaultNamespace
	}
	o := object{kind: "Service", namespace: svc.Namespace, name: svc.Name}
	if err := validateService(svc); err != nil {
		p.fail(p.path+": "+o.id(), fmt.Errorf("invalid: %w", err))
		return
	}
	o.svc = source.ServiceFromAPI(svc)
	p.objects = append(p.objects, o)
}

func (p *documentParser) addEndpointSlice(slice *discoveryv1.EndpointSlice, where string) {
	if slice.Name == "" {
		p.fail(where, errors.New("EndpointSlice: missing metadata.name"))
		return
	}
	if slice.Namespace == "" {
		slice.Namespace = defaultNamespace
	}
	o := object{kind: "EndpointSlice", namespace: slice.Namespace, name: slice.Name}
	if err := validateEndpointSlice(slice); err != nil {
		p.fail(p.path+": "+o.id(), fmt.Errorf("invalid: %w", err))
		return
	}
	o.slice = source.EndpointSliceFromAPI(slice)
	p.objects = append(p.objects, o)
}

func (p *documentParser) addServiceCIDR(c *networkingv1.ServiceCIDR, where string) {
	if c.Name == "" {
		p.fail(where, errors.New("ServiceCIDR: missing metadata.name"))
		return
	}
	o := object{kind: "ServiceCIDR", name: c.Name}
	if err := validateServiceCIDR(c); err != nil {
		p.fail(p.path+": "+o.id(), fmt.Errorf("invalid: %w", err))
		return
	}
	o.cidrs = source.ServiceCIDRFromAPI(c)
	p.objects = append(p.objects, o)
}
