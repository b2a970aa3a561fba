package envoyrls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
	"github.com/sluice-dev/sluice/domain"
)

// serve starts srv on a loopback port and returns its address; the test stops it.
func serve(t *testing.T, srv *envoyrls.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

var fooReq = &rlsv3.RateLimitRequest{Domain: "contour", Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "generic_key", Value: "foo"}}}}}

// TestServerH2CHealthAndAuth: plain-text HTTP/2 (h2c), the standard health service open to all, and
// ShouldRateLimit only with a check token in the authorization metadata.
func TestServerH2CHealthAndAuth(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	srv, err := envoyrls.NewServer(h.svc, envoyrls.ServerOptions{Authorize: func(a string) bool { return a == "Bearer s3cret" }})
	if err != nil {
		t.Fatal(err)
	}
	cc := dial(t, serve(t, srv), insecure.NewCredentials())
	ctx := context.Background()
	for _, svc := range []string{"", envoyrls.ServiceName} {
		hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v", svc, hr, err)
		}
	}
	rl := rlsv3.NewRateLimitServiceClient(cc)
	if _, err := rl.ShouldRateLimit(ctx, fooReq); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v, want Unauthenticated", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong")
	if _, err := rl.ShouldRateLimit(bad, fooReq); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v, want Unauthenticated", err)
	}
	good := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	resp, err := rl.ShouldRateLimit(good, fooReq)
	if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[0].LimitRemaining != 1 {
		t.Errorf("with token: %v %v", resp, err)
	}
}

// blockingLimiter holds every check until release is closed.
type blockingLimiter struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingLimiter) CheckPolicies(ctx context.Context, cs []domain.PolicyCheck, _ bool) ([]domain.Result, bool, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	out := make([]domain.Result, len(cs))
	for i, c := range cs {
		out[i] = domain.Result{Decision: domain.Decision{Allowed: true, Limit: c.Policy.Limit, Remaining: c.Policy.Limit - c.Cost, ResetAfter: time.Second}, Policy: c.Policy, Key: c.Key}
	}
	return out, true, nil
}

func (b *blockingLimiter) HoldPolicy(context.Context, domain.PolicyHold) (domain.HoldResult, error) {
	return domain.HoldResult{}, errors.New("no holds in this test")
}

// TestServerGracefulStop: Stop lets a call in flight finish (health turns NOT_SERVING first); a drain that
// outlasts its context is cut short and says so.
func TestServerGracefulStop(t *testing.T) {
	rules, err := envoyrls.LoadDir("testdata/contour", envoyrls.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, finish := range []bool{true, false} {
		lim := &blockingLimiter{entered: make(chan struct{}, 1), release: make(chan struct{})}
		srv, err := envoyrls.NewServer(envoyrls.NewService(lim, rules, envoyrls.ServiceOptions{}), envoyrls.ServerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		cc := dial(t, ln.Addr().String(), insecure.NewCredentials())
		type answer struct {
			resp *rlsv3.RateLimitResponse
			err  error
		}
		got := make(chan answer, 1)
		go func() {
			r, err := rlsv3.NewRateLimitServiceClient(cc).ShouldRateLimit(context.Background(), fooReq)
			got <- answer{r, err}
		}()
		<-lim.entered
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan error, 1)
		go func() { stopped <- srv.Stop(ctx) }()
		if finish {
			close(lim.release)
			if err := <-stopped; err != nil {
				t.Errorf("Stop: %v", err)
			}
			if a := <-got; a.err != nil || a.resp.OverallCode != rlsv3.RateLimitResponse_OK {
				t.Errorf("call in flight: %v %v, want it answered", a.resp, a.err)
			}
		} else {
			cancel()
			if err := <-stopped; !errors.Is(err, context.Canceled) {
				t.Errorf("Stop past its deadline: %v, want context.Canceled", err)
			}
			if a := <-got; a.err == nil {
				t.Error("the cut call was answered")
			}
		}
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

// TestServerMTLS: with a certificate and a client CA, a client without a certificate is refused and one with a
// certificate signed by the CA is served.
func TestServerMTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "test ca", true)
	srvCert, srvKey := newCert(t, ca, caKey, "127.0.0.1", false)
	cliCert, cliKey := newCert(t, ca, caKey, "envoy", false)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	writePEM(t, filepath.Join(dir, "tls.crt"), "CERTIFICATE", srvCert.Raw)
	writeKey(t, filepath.Join(dir, "tls.key"), srvKey)

	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	files := envoyrls.TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), ClientCAFile: filepath.Join(dir, "ca.pem")}
	srv, err := envoyrls.NewServer(h.svc, envoyrls.ServerOptions{TLS: files})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	noCert := dial(t, addr, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}))
	if _, err := rlsv3.NewRateLimitServiceClient(noCert).ShouldRateLimit(ctx, fooReq); err == nil {
		t.Error("a client without a certificate was served")
	}
	withCert := dial(t, addr, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}}}))
	if resp, err := rlsv3.NewRateLimitServiceClient(withCert).ShouldRateLimit(ctx, fooReq); err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Errorf("client with a certificate: %v %v", resp, err)
	}
	if _, err := envoyrls.NewServer(h.svc, envoyrls.ServerOptions{TLS: envoyrls.TLSFiles{ClientCAFile: files.ClientCAFile}}); err == nil {
		t.Error("client_ca_file without a certificate accepted")
	}
}

func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:        isCA, BasicConstraintsValid: true,
	}
	if !isCA {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	must(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

func writeKey(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}

// countingObserver records the calls and reloads an Observer sees.
type countingObserver struct {
	mu      sync.Mutex
	calls   map[string]int // "method code"
	reloads map[string]int // "source ok"
}

func (o *countingObserver) Call(method string, code codes.Code, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls[method+" "+code.String()]++
}

func (o *countingObserver) Reload(source string, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reloads[fmt.Sprint(source, " ", ok)]++
}

// Issue 27: a connection that never finishes its handshake is closed after HandshakeTimeout (grpc-go would keep it
// 120 s); a request of more than MaxDescriptors descriptors is INVALID_ARGUMENT, decided by nothing; every call is
// observed by method and code.
func TestServerBoundsConnectionsAndRequests(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	obs := &countingObserver{calls: map[string]int{}, reloads: map[string]int{}}
	srv, err := envoyrls.NewServer(h.svc, envoyrls.ServerOptions{HandshakeTimeout: 300 * time.Millisecond, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)

	// A client that connects and says nothing.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	if err := silent.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	for {
		if _, err := silent.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a silent connection was still open after %s", time.Since(start))
			}
			break // closed by the server
		}
	}

	cc := dial(t, addr, insecure.NewCredentials())
	rl := rlsv3.NewRateLimitServiceClient(cc)
	ctx := context.Background()
	many := &rlsv3.RateLimitRequest{Domain: "contour"}
	for range envoyrls.MaxDescriptors + 1 {
		many.Descriptors = append(many.Descriptors, fooReq.Descriptors[0])
	}
	if _, err := rl.ShouldRateLimit(ctx, many); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("%d descriptors: %v, want InvalidArgument", len(many.Descriptors), err)
	}
	if resp, err := rl.ShouldRateLimit(ctx, fooReq); err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("a request after the refused one: %v %v", resp, err)
	}
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.calls["ShouldRateLimit InvalidArgument"] != 1 || obs.calls["ShouldRateLimit OK"] != 1 || obs.calls["Check OK"] != 1 {
		t.Fatalf("observed calls %v", obs.calls)
	}
}

// rawCodec sends a request's bytes as they are (so a test can send what a protobuf library would refuse to
// encode) and reads the answer as protobuf.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) {
	return v.([]byte), nil
}
func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }

// rawRequest encodes a RateLimitRequest of one descriptor by hand, entries as (key, value) byte strings.
func rawRequest(domainName string, entries ...[2]string) []byte {
	var desc []byte
	for _, e := range entries {
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, e[0])
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendString(entry, e[1])
		desc = protowire.AppendTag(desc, 1, protowire.BytesType)
		desc = protowire.AppendBytes(desc, entry)
	}
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, domainName)
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, desc)
	return req
}

// Invalid UTF-8 in a descriptor value (an HTTP header's obs-text bytes) is decided as a key, not answered
// INTERNAL (which Envoy's default failure_mode_deny: false turns into "allow", skipping the limit); distinct
// byte values are distinct keys; authentication still comes first (issue 27).
func TestServerDecidesInvalidUTF8(t *testing.T) {
	h := newHarness(t, "testdata/contour", envoyrls.ServiceOptions{})
	srv, err := envoyrls.NewServer(h.svc, envoyrls.ServerOptions{Authorize: func(a string) bool { return a == "Bearer s3cret" }})
	if err != nil {
		t.Fatal(err)
	}
	cc := dial(t, serve(t, srv), insecure.NewCredentials())
	call := func(ctx context.Context, req []byte) (*rlsv3.RateLimitResponse, error) {
		resp := new(rlsv3.RateLimitResponse)
		err := cc.Invoke(ctx, "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", req, resp, grpc.ForceCodec(rawCodec{}))
		return resp, err
	}
	ff := rawRequest("contour", [2]string{"generic_key", "vhost"}, [2]string{"remote_address", "10.0.0.\xff"})
	if _, err := call(context.Background(), ff); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a token: %v, want Unauthenticated", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer s3cret")
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		resp, err := call(ctx, ff)
		if err != nil || resp.OverallCode != want {
			t.Fatalf("call %d with \\xff: %v %v, want %v", i, resp, err, want)
		}
	}
	fe := rawRequest("contour", [2]string{"generic_key", "vhost"}, [2]string{"remote_address", "10.0.0.\xfe"})
	if resp, err := call(ctx, fe); err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[0].LimitRemaining != 2 {
		t.Fatalf("another invalid byte is another key: %v %v", resp, err)
	}
}
