package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
	"github.com/podwall/podwall/daemon/syncer"
)

// Attachments is what the state gauges read of the syncer: the attachments
// it serves, each with the firewall in force.
type Attachments interface {
	Pods() []syncer.PodView
}

// PolicySource is what the state gauges read of the policy source.
type PolicySource interface {
	State() *policy.State
	Errors() []source.Error
}

// CollectState adds the state gauges, read from pods and src at every
// scrape. It fails when state gauges were added before.
func (r *Registry) CollectState(pods Attachments, src PolicySource) error {
	return r.registry.Register(newStateCollector(pods, src))
}

// stateCollector computes the state gauges from the syncer's and the
// source's views at scrape time; it keeps no state of its own. Its totals
// are across local pods, never per pod: per-pod series would be 110 pods
// times every node.
type stateCollector struct {
	pods Attachments
	src  PolicySource

	attachments  *prometheus.Desc
	isolated     *prometheus.Desc
	rules        *prometheus.Desc
	setMembers   *prometheus.Desc
	podRules     *prometheus.Desc
	podMembers   *prometheus.Desc
	policies     *prometheus.Desc
	sourceErrors *prometheus.Desc
}

func newStateCollector(pods Attachments, src PolicySource) *stateCollector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "", n) }
	return &stateCollector{
		pods: pods,
		src:  src,
		attachments: prometheus.NewDesc(name("pods"),
			"Attachments (local pods' interfaces) the daemon manages.", nil, nil),
		isolated: prometheus.NewDesc(name("pods_isolated"),
			"Attachments whose firewall in force isolates the direction (ingress, egress).", []string{"direction"}, nil),
		rules: prometheus.NewDesc(name("rules"),
			"Allow rules (one peer with its ports) of the firewalls in force, summed over attachments.", nil, nil),
		setMembers: prometheus.NewDesc(name("set_members"),
			"Members of the peer ipsets of the firewalls in force, both families, summed over attachments (node-address sets not counted).", nil, nil),
		podRules: prometheus.NewDesc(name("pod_rules"),
			"Allow rules of each attachment's firewall in force (both directions), as a distribution over attachments.", nil, nil),
		podMembers: prometheus.NewDesc(name("pod_set_members"),
			"Members of each attachment's peer ipsets in force (both families), as a distribution over attachments.", nil, nil),
		policies: prometheus.NewDesc(name("policies"),
			"NetworkPolicies in the policy source.", nil, nil),
		sourceErrors: prometheus.NewDesc(name("source_errors"),
			"Inputs the policy source currently cannot use (e.g. broken manifests).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.attachments, c.isolated, c.rules, c.setMembers, c.podRules, c.podMembers, c.policies, c.sourceErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	views := c.pods.Pods()
	var ingress, egress, rules, members int
	podRules, podMembers := newDistribution(rulesBuckets), newDistribution(membersBuckets)
	for _, v := range views {
		fw := v.Firewall
		if fw == nil {
			continue // nothing applied yet
		}
		if fw.Ingress.Isolated {
			ingress++
		}
		if fw.Egress.Isolated {
			egress++
		}
		n, m := v.Rules, v.SetMembers // counted at apply time, not rendered per scrape
		rules += n
		members += m
		podRules.observe(n)
		podMembers.observe(m)
	}
	var policies int
	if st := c.src.State(); st != nil {
		policies = len(st.Policies)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(c.attachments, len(views))
	gauge(c.isolated, ingress, "ingress")
	gauge(c.isolated, egress, "egress")
	gauge(c.rules, rules)
	gauge(c.setMembers, members)
	ch <- podRules.metric(c.podRules)
	ch <- podMembers.metric(c.podMembers)
	gauge(c.policies, policies)
	gauge(c.sourceErrors, len(c.src.Errors()))
}

// rulesBuckets and membersBuckets bound the per-attachment distributions:
// from a pod with one rule to a namespace-wide allow list, and from a
// handful of peers to a whole cluster's pods in a set.
var (
	rulesBuckets   = []float64{0, 1, 2, 5, 10, 20, 50, 100, 250, 500, 1000}
	membersBuckets = []float64{0, 1, 10, 100, 1000, 10000, 100000}
)

// distribution counts values into cumulative buckets, for a histogram
// computed at scrape time (no per-pod series).
type distribution struct {
	bounds []float64
	counts map[float64]uint64
	count  uint64
	sum    float64
}

func newDistribution(bounds []float64) *distribution {
	return &distribution{bounds: bounds, counts: make(map[float64]uint64, len(bounds))}
}

func (d *distribution) observe(v int) {
	d.count++
	d.sum += float64(v)
	for _, b := range d.bounds {
		if float64(v) <= b {
			d.counts[b]++
		}
	}
}

func (d *distribution) metric(desc *prometheus.Desc) prometheus.Metric {
	buckets := make(map[float64]uint64, len(d.bounds))
	for _, b := range d.bounds {
		buckets[b] = d.counts[b]
	}
	return prometheus.MustNewConstHistogram(desc, d.count, d.sum, buckets)
}
