package harness

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// PodDetail returns `podwallctl pod NAMESPACE/NAME -o json` decoded: the
// pod's attachment, the rules and ipsets in force, and the daemon's Service
// verdicts for it.
func (d *Daemon) PodDetail(ctx context.Context, namespace, name string) (*pb.PodDetail, error) {
	out, err := d.Ctl(ctx, "pod", namespace+"/"+name, "-o", "json")
	if err != nil {
		return nil, err
	}
	detail := &pb.PodDetail{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), detail); err != nil {
		return nil, fmt.Errorf("podwallctl pod %s/%s -o json: decode: %w", namespace, name, err)
	}
	return detail, nil
}
