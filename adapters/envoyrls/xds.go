package envoyrls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rlsconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
)

// XDSTypeURL is the resource type an xDS management server (Envoy Gateway's) pushes rate-limit configs as.
const XDSTypeURL = resource.RateLimitConfigType

// RulesFromXDS turns the RateLimitConfig resources of one xDS response into Rules, through the same reader as the
// files (each config is written as the YAML file it stands for, named "xds:<name>"), so every rule and every
// message is the files'. The proto has no quota_mode or share_threshold, as upstream's conversion.
func RulesFromXDS(configs []*rlsconf.RateLimitConfig, opts LoadOptions) (*Rules, error) {
	names := make([]string, 0, len(configs))
	contents := make(map[string][]byte, len(configs))
	for _, c := range configs {
		name := "xds:" + c.GetName()
		if _, dup := contents[name]; dup {
			return nil, fmt.Errorf("xds: two RateLimitConfig resources named %q", c.GetName())
		}
		b, err := yaml.Marshal(map[string]any{"domain": c.GetDomain(), "descriptors": descriptorsYAML(c.GetDescriptors())})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		names = append(names, name)
		contents[name] = b
	}
	sort.Strings(names)
	return Load(names, contents, opts)
}

func descriptorsYAML(ds []*rlsconf.RateLimitDescriptor) []map[string]any {
	out := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		m := map[string]any{"key": d.GetKey()}
		if d.GetValue() != "" {
			m["value"] = d.GetValue()
		}
		if d.GetShadowMode() {
			m["shadow_mode"] = true
		}
		if d.GetDetailedMetric() {
			m["detailed_metric"] = true
		}
		if p := d.GetRateLimit(); p != nil {
			rl := map[string]any{}
			if p.GetUnit() != rlsconf.RateLimitUnit_UNKNOWN {
				rl["unit"] = p.GetUnit().String()
			}
			if !p.GetUnlimited() {
				rl["requests_per_unit"] = p.GetRequestsPerUnit()
			} else {
				rl["unlimited"] = true
			}
			if p.GetName() != "" {
				rl["name"] = p.GetName()
			}
			for _, r := range p.GetReplaces() {
				rs, _ := rl["replaces"].([]map[string]any)
				rl["replaces"] = append(rs, map[string]any{"name": r.GetName()})
			}
			m["rate_limit"] = rl
		}
		if len(d.GetDescriptors()) > 0 {
			m["descriptors"] = descriptorsYAML(d.GetDescriptors())
		}
		out = append(out, m)
	}
	return out
}

// XDSClient subscribes to RateLimitConfig resources over ADS State-of-the-World, as envoyproxy/ratelimit does
// with CONFIG_TYPE=GRPC_XDS_SOTW (what Envoy Gateway serves), and swaps each version that loads into svc.
type XDSClient struct {
	Conn    grpc.ClientConnInterface
	NodeID  string
	Service *Service
	Load    LoadOptions
	Log     *slog.Logger
	// Retry is the wait before reconnecting after the stream fails (default 3 s).
	Retry time.Duration
	// Applied, when set, is called after each response with whether it took effect (tests wait on it).
	Applied func(ok bool, err error)
}

// Run receives configs until ctx ends. A version that loads is ACKed and takes effect at once; one that does not
// is NACKed with the reader's message and the rules in force stay, as a broken file reload.
func (x *XDSClient) Run(ctx context.Context) error {
	retry := x.Retry
	if retry <= 0 {
		retry = 3 * time.Second
	}
	node := &corev3.Node{Id: x.NodeID}
	for ctx.Err() == nil {
		c := sotw.NewADSClient(ctx, node, XDSTypeURL)
		err := c.InitConnect(x.Conn)
		for err == nil {
			var resp *sotw.Response
			if resp, err = c.Fetch(); err != nil {
				break
			}
			rules, lerr := x.decode(resp)
			if lerr != nil {
				x.Log.Error("rls xds: refusing a config version; keeping the rules in force", "err", lerr)
				err = c.Nack(lerr.Error())
			} else {
				x.Service.SetRules(rules)
				x.Log.Info("rls xds: config applied", "configs", len(resp.Resources), "policies", rules.Policies)
				err = c.Ack()
			}
			x.Service.Reloaded("xds", lerr == nil)
			if x.Applied != nil {
				x.Applied(lerr == nil, lerr)
			}
		}
		if ctx.Err() != nil {
			break
		}
		x.Log.Warn("rls xds: stream ended; reconnecting", "err", err, "retry_in", retry)
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
	return ctx.Err()
}

func (x *XDSClient) decode(resp *sotw.Response) (*Rules, error) {
	configs := make([]*rlsconf.RateLimitConfig, 0, len(resp.Resources))
	for _, a := range resp.Resources {
		c := &rlsconf.RateLimitConfig{}
		if err := a.UnmarshalTo(c); err != nil {
			return nil, fmt.Errorf("xds: a resource of type %s is not a RateLimitConfig: %w", a.GetTypeUrl(), err)
		}
		configs = append(configs, c)
	}
	if len(configs) == 0 {
		return nil, errors.New("xds: a response without RateLimitConfig resources")
	}
	return RulesFromXDS(configs, x.Load)
}
