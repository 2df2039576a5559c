// Package metrics is podwalld's Prometheus instrumentation, on a registry of
// its own: sync and apply counters and latencies (it is the syncer's
// Observer), CNI request counters and latencies (a gRPC interceptor on the
// CNI service), and gauges of the local state, computed at scrape time from
// the syncer's and the source's views rather than kept alongside them.
// Label values are bounded (verbs, gRPC codes, directions, results): nothing
// is labelled per pod. It reads the syncer (whose views carry each
// firewall's rule and set-member counts, taken at apply time, so a scrape
// renders nothing); it must not import the gRPC server or a concrete source,
// nor change anything it observes.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/podwall/podwall/daemon/syncer"
)

// namespace prefixes every podwall metric name.
const namespace = "podwall"

// latencyBuckets (seconds) fit one dataplane apply or one CNI request: from
// a STATUS answered in well under a millisecond to an ADD near the plugin's
// default 10 s timeout.
var latencyBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// syncBuckets (seconds) fit one sync of every local pod, which applies the
// changed pods one after the other.
var syncBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Registry holds podwalld's metrics. The zero value is not usable; call New.
type Registry struct {
	registry *prometheus.Registry

	syncs         prometheus.Counter
	syncErrors    prometheus.Counter
	syncDuration  prometheus.Histogram
	lastSync      prometheus.Gauge
	applies       *prometheus.CounterVec
	applyDuration prometheus.Histogram

	cniRequests *prometheus.CounterVec
	cniErrors   *prometheus.CounterVec
	cniDuration *prometheus.HistogramVec

	dataplaneUsable prometheus.Gauge
}

// The syncer reports syncs and applies to a Registry.
var _ syncer.Observer = (*Registry)(nil)

// New returns a Registry with podwall's sync, apply and CNI metrics,
// podwall_build_info for version, and the Go runtime and process metrics.
// The state gauges are added by CollectState.
func New(version string) *Registry {
	r := &Registry{
		registry: prometheus.NewRegistry(),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "syncs_total",
			Help: "Syncs of every local pod (after source changes, DEL, GC, and periodically).",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_errors_total",
			Help: "Syncs that could not apply the firewall of some local pod.",
		}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_duration_seconds",
			Help:    "Duration of one sync of every local pod.",
			Buckets: syncBuckets,
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "last_sync_timestamp_seconds",
			Help: "Unix time of the end of the last sync that applied every local pod's firewall (0: none yet).",
		}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "pod_applies_total",
			Help: "Firewall applies inside a pod's network namespace, by result (ok, error).",
		}, []string{"result"}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "pod_apply_duration_seconds",
			Help:    "Duration of one firewall apply inside a pod's network namespace.",
			Buckets: latencyBuckets,
		}),
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cni_requests_total",
			Help: "CNI requests from the plugin, by verb and the gRPC status code the daemon answered.",
		}, []string{"verb", "code"}),
		cniErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cni_errors_total",
			Help: "CNI requests the daemon failed, by verb and the CNI error code the podwall plugin returns for the answer (7, 8, 11, 100, 101; 50 for STATUS). DEL errors are logged by the plugin, which reports success.",
		}, []string{"verb", "cni_code"}),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "cni_request_duration_seconds",
			Help:    "Duration of one CNI request from the plugin, by verb.",
			Buckets: latencyBuckets,
		}, []string{"verb"}),
	}
	r.dataplaneUsable = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "dataplane_usable",
		Help: "1 when the last dataplane self-test (a firewall applied, read back and removed in a scratch network namespace) passed, else 0.",
	})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; the labels say which podwalld this is.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)

	// Series that exist from the start, so that rates and ratios over them
	// are defined before the first event.
	for _, result := range []string{resultOK, resultError} {
		r.applies.WithLabelValues(result)
	}
	for _, verb := range cniVerbs {
		r.cniRequests.WithLabelValues(verb, "OK")
		r.cniDuration.WithLabelValues(verb)
	}

	r.registry.MustRegister(
		r.syncs, r.syncErrors, r.syncDuration, r.lastSync, r.applies, r.applyDuration,
		r.cniRequests, r.cniErrors, r.cniDuration, r.dataplaneUsable, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return r
}

// Gatherer returns the registry, for tests and other exporters.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.registry }

// Handler serves the registry in the Prometheus exposition formats.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.registry, promhttp.HandlerOpts{})
}

const (
	resultOK    = "ok"
	resultError = "error"
)

// SyncDone counts one sync and its duration; a sync without errors is the
// new last successful sync. It implements syncer.Observer.
func (r *Registry) SyncDone(d time.Duration, err error) {
	r.syncs.Inc()
	r.syncDuration.Observe(d.Seconds())
	if err != nil {
		r.syncErrors.Inc()
		return
	}
	r.lastSync.SetToCurrentTime()
}

// ApplyDone counts one dataplane apply by result and observes its duration.
// It implements syncer.Observer.
func (r *Registry) ApplyDone(d time.Duration, err error) {
	result := resultOK
	if err != nil {
		result = resultError
	}
	r.applies.WithLabelValues(result).Inc()
	r.applyDuration.Observe(d.Seconds())
}

// SetDataplaneUsable records the outcome of the daemon's dataplane
// self-test.
func (r *Registry) SetDataplaneUsable(ok bool) {
	if ok {
		r.dataplaneUsable.Set(1)
	} else {
		r.dataplaneUsable.Set(0)
	}
}
