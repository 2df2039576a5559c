package syncer

import (
	"errors"
	"strings"
	"testing"

	"github.com/podwall/podwall/daemon/policy"
)

// TestExplain: Explain answers from the state the syncer compiles (local
// pods with their CNI addresses), allows the node's addresses and the
// link's gateway in, and says when the firewall in force differs.
func TestExplain(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db, client)
	tests := []struct {
		q           policy.ExplainQuery
		want        policy.Verdict
		ingressWhy  string
		ingressRule string
	}{
		{policy.ExplainQuery{Source: "shop/web", Destination: "shop/db", Port: 5432}, policy.VerdictAllowed,
			"allowed by shop/db-from-web ingress[0]", "shop/db-from-web ingress[0]"},
		{policy.ExplainQuery{Source: "shop/client", Destination: "shop/db", Port: 5432}, policy.VerdictDenied,
			"isolated by shop/db-from-web; no rule allows 10.1.0.30 on TCP/5432", ""},
		{policy.ExplainQuery{Source: "shop/web", Destination: "shop/db", Port: 5433}, policy.VerdictDenied,
			"no rule allows 10.1.0.10 on TCP/5433", ""},
		{policy.ExplainQuery{Source: testNodeAddr.String(), Destination: "shop/db", Port: 9}, policy.VerdictAllowed,
			"an address of this node (always allowed in)", ""},
		{policy.ExplainQuery{Source: "10.1.0.1", Destination: "shop/db", Port: 9}, policy.VerdictAllowed,
			"an address of this node (always allowed in)", ""},
		{policy.ExplainQuery{Source: "shop/db", Destination: "shop/web", Port: 80}, policy.VerdictAllowed,
			"no policy isolates shop/web's ingress: open", ""},
	}
	for _, tt := range tests {
		t.Run(tt.q.Source+" "+tt.q.Destination, func(t *testing.T) {
			x, err := tb.sync.Explain(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			in := x.Flows[0].Ingress
			if x.Verdict != tt.want || !strings.Contains(in.Reason, tt.ingressWhy) || !in.Enforced || in.Pending != "" {
				t.Errorf("verdict %s, ingress %+v; want %s and %q", x.Verdict, in, tt.want, tt.ingressWhy)
			}
			if tt.ingressRule != "" && (len(in.AllowedBy) != 1 || in.AllowedBy[0].String() != tt.ingressRule) {
				t.Errorf("ingress allowed by %v, want %s", in.AllowedBy, tt.ingressRule)
			}
		})
	}

	// The policies change but db's firewall cannot be applied: explain
	// gives the new verdict and says what is still in force, and why.
	boom := errors.New("iptables-nft-restore: exit status 1")
	tb.data.failApply(db.Netns, boom)
	next := shopState(t)
	next.Pods[2] = sourcePod("client", map[string]string{"app": "web"})
	tb.src.setState(next)
	tb.sync.SyncAll(t.Context())
	x, err := tb.sync.Explain(policy.ExplainQuery{Source: "shop/client", Destination: "shop/db", Port: 5432})
	if err != nil {
		t.Fatal(err)
	}
	in := x.Flows[0].Ingress
	if x.Verdict != policy.VerdictAllowed || !strings.Contains(in.Pending, "still says denied") || !strings.Contains(in.Pending, boom.Error()) {
		t.Errorf("after a failed apply: verdict %s, pending %q", x.Verdict, in.Pending)
	}

	if _, err := tb.sync.Explain(policy.ExplainQuery{Source: "shop/nope", Destination: "shop/db"}); !errors.Is(err, policy.ErrExplainNotFound) {
		t.Errorf("unknown pod: %v, want ErrExplainNotFound", err)
	}
}
