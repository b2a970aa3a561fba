package envoyrls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// ServiceName is the gRPC service this front end serves, also reported by the health service.
const ServiceName = "envoy.service.ratelimit.v3.RateLimitService"

// TLSFiles names PEM files. With CertFile and KeyFile the listener speaks TLS (else h2c: HTTP/2 over plain TCP,
// what Envoy's gRPC client sends by default); ClientCAFile additionally requires and verifies client
// certificates (mTLS).
type TLSFiles struct {
	CertFile, KeyFile, ClientCAFile string
}

// Authorizer reports whether the bearer token of an `authorization` metadata value ("Bearer <token>"; "" when the
// call has none) may check.
type Authorizer func(authorization string) bool

// Server is the gRPC server: ShouldRateLimit and the standard grpc.health.v1 service.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
}

// ServerOptions configure a Server.
type ServerOptions struct {
	TLS TLSFiles
	// TLSConfig, when set, is used instead of TLS: the caller's configuration, e.g. one that reads rotated
	// certificate files again (app's certFiles). It must offer "h2" (ALPN) as gRPC requires.
	TLSConfig *tls.Config
	// Authorize, when not nil, is required to accept every ShouldRateLimit call (health checks stay open, as
	// /healthz is on the HTTP API).
	Authorize Authorizer
	// HandshakeTimeout bounds how long a new connection may take to finish its TLS and HTTP/2 handshakes before
	// it is closed (≤ 0: 5s, the HTTP listener's bound on reading headers). grpc-go's own default is 120 s, so a
	// client that opens connections and sends nothing would hold a descriptor each for two minutes.
	HandshakeTimeout time.Duration
	// Observer, when not nil, records every call (method, code, duration).
	Observer Observer
	// StatsHandler, when not nil, sees every RPC as gRPC's stats handlers do: app passes otelgrpc's server handler
	// when tracing is on (a span per call, continuing the W3C trace context of the call's metadata). nil: none.
	StatsHandler stats.Handler
}

// Observer receives what the RLS front end did, for metrics. Implementations must be cheap and safe for
// concurrent use.
type Observer interface {
	// Call records one answered call: method is the gRPC method's name (ShouldRateLimit, Check, Watch or
	// "other"), code its status code.
	Call(method string, code codes.Code, d time.Duration)
	// Reload records a rules reload from source ("files" or "xds") that took effect (ok) or was refused.
	Reload(source string, ok bool)
}

// methodName is the label of a gRPC full method: its last element for the services served, "other" otherwise.
func methodName(full string) string {
	switch full {
	case "/" + ServiceName + "/ShouldRateLimit":
		return "ShouldRateLimit"
	case "/grpc.health.v1.Health/Check":
		return "Check"
	case "/grpc.health.v1.Health/Watch":
		return "Watch"
	}
	return "other"
}

// NewServer builds the gRPC server for svc.
func NewServer(svc *Service, o ServerOptions) (*Server, error) {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	tlsFiles, authorize := o.TLS, o.Authorize
	opts := []grpc.ServerOption{
		grpc.ConnectionTimeout(o.HandshakeTimeout),
		// Envoy keeps its connection to the rate-limit service open; answer its pings, drop dead peers. Connections
		// are recycled after an hour (GOAWAY, calls in flight finish within the grace), so replicas added behind a
		// Service get their share of Envoy's long-lived connections (envoyproxy/ratelimit: GRPC_MAX_CONNECTION_AGE).
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second,
			MaxConnectionAge: time.Hour, MaxConnectionAgeGrace: time.Minute}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(1 << 20),
		// Invalid UTF-8 in a descriptor is decided as bytes, not refused with INTERNAL (codec.go).
		grpc.ForceServerCodec(rlsCodec{}),
	}
	if o.TLSConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLSConfig)))
	} else if tlsFiles.CertFile != "" || tlsFiles.KeyFile != "" || tlsFiles.ClientCAFile != "" {
		cfg, err := tlsConfig(tlsFiles)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	var interceptors []grpc.UnaryServerInterceptor
	if o.Observer != nil {
		obs := o.Observer
		interceptors = append(interceptors, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			obs.Call(methodName(info.FullMethod), status.Code(err), time.Since(start))
			return resp, err
		})
	}
	if authorize != nil {
		interceptors = append(interceptors, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if strings.HasPrefix(info.FullMethod, "/grpc.health.v1.") {
				return h(ctx, req)
			}
			md, _ := metadata.FromIncomingContext(ctx)
			v := md.Get("authorization")
			a := "" // none: the authorizer decides (it may have no tokens to ask for since a reload)
			if len(v) == 1 {
				a = v[0]
			}
			if len(v) > 1 || !authorize(a) {
				return nil, status.Error(codes.Unauthenticated, "send authorization: Bearer <token> metadata with a configured token of role check or admin")
			}
			return h(ctx, req)
		})
	}
	if len(interceptors) > 0 {
		opts = append(opts, grpc.ChainUnaryInterceptor(interceptors...))
	}
	if o.StatsHandler != nil {
		opts = append(opts, grpc.StatsHandler(o.StatsHandler))
	}
	s := &Server{grpc: grpc.NewServer(opts...), health: health.NewServer()}
	rlsv3.RegisterRateLimitServiceServer(s.grpc, svc)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

func tlsConfig(f TLSFiles) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("rls.tls: cert_file and key_file go together (client_ca_file needs both)")
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("rls.tls: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("rls.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("rls.tls.client_ca_file %s: no PEM certificate in it", f.ClientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Serve serves on ln until Stop; it returns nil after a Stop.
func (s *Server) Serve(ln net.Listener) error {
	err := s.grpc.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop drains: health turns NOT_SERVING (so a health-checking client moves away), no new calls are accepted,
// calls in flight finish. When ctx ends first the remaining connections are closed and ctx's error returned.
func (s *Server) Stop(ctx context.Context) error {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return ctx.Err()
	}
}
