package app

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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a CA the test makes, issuing ECDSA certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a certificate for 127.0.0.1 (server) or a client, with the serial number given so a test can tell
// certificates apart; it returns the PEM certificate and PKCS #8 key.
func (ca testCA) issue(t *testing.T, serial int64, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("sluice-%d", serial)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

func writeTo(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tlsFiles writes a CA, a server certificate (serial 10) and its key in a temporary directory.
func tlsFiles(t *testing.T) (dir string, ca testCA, files HTTPTLS) {
	dir = t.TempDir()
	ca = newTestCA(t, "sluice test CA")
	cert, key := ca.issue(t, 10, false)
	files = HTTPTLS{CertFile: writeTo(t, filepath.Join(dir, "tls.crt"), cert), KeyFile: writeTo(t, filepath.Join(dir, "tls.key"), key)}
	writeTo(t, filepath.Join(dir, "ca.crt"), ca.pem)
	return dir, ca, files
}

// runTLS runs sluice with cfg and returns its address; it stops when the test ends.
func runTLS(t *testing.T, cfg Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, testBuild(t), slog.New(slog.DiscardHandler), func(a string) { addrs <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	select {
	case a := <-addrs:
		return a
	case err := <-done:
		done <- nil
		t.Fatal(err)
		return ""
	}
}

func check(client *http.Client, url string) (int, string, error) {
	resp, err := client.Post(url+"/v1/check", "application/json", strings.NewReader(`{"policy":"login","key":"k"}`))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func httpsClient(roots *x509.CertPool, certs ...tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
}

// TestHTTPS: with http.tls.cert_file and key_file the API answers HTTPS to a client that trusts the CA; plain HTTP
// to that port gets no decision, and a client that does not trust the CA fails its handshake.
func TestHTTPS(t *testing.T) {
	_, ca, files := tlsFiles(t)
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Policies = []PolicyConfig{{Name: "login", Limit: 5, Window: Duration(time.Minute)}}
	cfg.HTTP.TLS = files
	addr := runTLS(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	if code, body, err := check(httpsClient(roots), "https://"+addr); err != nil || code != http.StatusOK || !strings.Contains(body, `"allowed":true`) {
		t.Fatalf("HTTPS check: %d %s %v", code, body, err)
	}
	// Go's server answers a plain-text request on a TLS port with 400 "Client sent an HTTP request to an HTTPS
	// server"; no decision is made.
	if code, body, err := check(http.DefaultClient, "http://"+addr); err == nil && (code != http.StatusBadRequest || strings.Contains(body, "allowed")) {
		t.Fatalf("plain HTTP to the TLS port: %d %s", code, body)
	}
	// HTTP/2 is offered (ALPN) as on any Go HTTPS server.
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	if resp, err := h2.Get("https://" + addr + "/healthz"); err != nil || resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 over TLS: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	var unknown x509.UnknownAuthorityError
	if _, _, err := check(httpsClient(x509.NewCertPool()), "https://"+addr); !errors.As(err, &unknown) {
		t.Fatalf("a client without the CA: %v", err)
	}
}

// TestHTTPSClientCertificates: with http.tls.client_ca_file a client without a certificate is refused in the
// handshake, and one with a certificate the CA signed is served.
func TestHTTPSClientCertificates(t *testing.T) {
	dir, ca, files := tlsFiles(t)
	clients := newTestCA(t, "sluice client CA")
	files.ClientCAFile = writeTo(t, filepath.Join(dir, "clients.crt"), clients.pem)
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Policies = []PolicyConfig{{Name: "login", Limit: 5, Window: Duration(time.Minute)}}
	cfg.HTTP.TLS = files
	addr := runTLS(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	if code, body, err := check(httpsClient(roots), "https://"+addr); err == nil {
		t.Fatalf("a client without a certificate was served: %d %s", code, body)
	}
	// A certificate from another CA (the server's) is refused too.
	otherPEM, otherKey := ca.issue(t, 20, true)
	other, err := tls.X509KeyPair(otherPEM, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, body, err := check(httpsClient(roots, other), "https://"+addr); err == nil {
		t.Fatalf("a client certificate of another CA was served: %d %s", code, body)
	}
	certPEM, keyPEM := clients.issue(t, 30, true)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if code, body, err := check(httpsClient(roots, cert), "https://"+addr); err != nil || code != http.StatusOK || !strings.Contains(body, `"allowed":true`) {
		t.Fatalf("a client with a certificate: %d %s %v", code, body, err)
	}
}

// TestHTTPSCertificateRotation: files rewritten in place are served by the first handshake once the check
// interval has passed on certFiles' clock (the test's own); a bad rewrite is logged once and the last good
// certificate is kept.
func TestHTTPSCertificateRotation(t *testing.T) {
	_, ca, files := tlsFiles(t)
	var logs strings.Builder
	cf, err := newCertFiles("http.tls", files, slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	cf.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(certCheckEvery); mu.Unlock() }

	ln, err := tls.Listen("tcp", "127.0.0.1:0", cf.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	served := func() int64 {
		t.Helper()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	rotate := func(serial int64) {
		cert, key := ca.issue(t, serial, false)
		writeTo(t, files.CertFile, cert)
		writeTo(t, files.KeyFile, key)
	}

	if got := served(); got != 10 {
		t.Fatalf("serial %d, want 10", got)
	}
	rotate(11)
	if got := served(); got != 10 {
		t.Fatalf("files read again within %s: serial %d, want 10", certCheckEvery, got)
	}
	advance()
	if got := served(); got != 11 {
		t.Fatalf("after rotation: serial %d, want 11", got)
	}
	if !strings.Contains(logs.String(), "serving the rotated certificate") || !strings.Contains(logs.String(), `subject="CN=sluice-11"`) {
		t.Errorf("rotation not logged:\n%s", logs.String())
	}

	// A half-done rotation: a new certificate with the old key. Kept out, logged once.
	cert12, _ := ca.issue(t, 12, false)
	writeTo(t, files.CertFile, cert12)
	for range 3 {
		advance()
		if got := served(); got != 11 {
			t.Fatalf("a certificate without its key: serial %d, want 11 kept", got)
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "http.tls.key_file: "+files.KeyFile+" is not the PEM private key") {
		t.Errorf("want one error naming http.tls.key_file, got %d:\n%s", n, logs.String())
	}
	// A missing file is logged and the last good certificate kept too.
	if err := os.Remove(files.KeyFile); err != nil {
		t.Fatal(err)
	}
	advance()
	if got := served(); got != 11 {
		t.Fatalf("key file missing: serial %d, want 11 kept", got)
	}
	if !strings.Contains(logs.String(), "http.tls.key_file: cannot read it") {
		t.Errorf("missing file not logged:\n%s", logs.String())
	}
	rotate(13)
	advance()
	if got := served(); got != 13 {
		t.Fatalf("after a good rotation: serial %d, want 13", got)
	}
}

// TestHTTPTLSValidation: start-up refuses bad http.tls combinations and files, naming the setting.
func TestHTTPTLSValidation(t *testing.T) {
	dir, ca, files := tlsFiles(t)
	_, otherKey := ca.issue(t, 40, false)
	mismatched := writeTo(t, filepath.Join(dir, "other.key"), otherKey)
	notPEM := writeTo(t, filepath.Join(dir, "not.pem"), []byte("hello\n"))
	missing := filepath.Join(dir, "missing.pem")
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"SLUICE_HTTP_TLS_KEY_FILE=" + files.KeyFile}, "SLUICE_HTTP_TLS_KEY_FILE=\"" + files.KeyFile + "\": needs http.tls.cert_file (SLUICE_HTTP_TLS_CERT_FILE) too"},
		{[]string{"SLUICE_HTTP_TLS_CERT_FILE=" + files.CertFile}, "SLUICE_HTTP_TLS_CERT_FILE=\"" + files.CertFile + "\": needs http.tls.key_file (SLUICE_HTTP_TLS_KEY_FILE) too"},
		{[]string{"SLUICE_HTTP_TLS_CLIENT_CA_FILE=" + filepath.Join(dir, "ca.crt")}, "SLUICE_HTTP_TLS_CLIENT_CA_FILE=\"" + filepath.Join(dir, "ca.crt") + "\": needs http.tls.cert_file and http.tls.key_file (HTTPS)"},
		{[]string{"SLUICE_HTTP_TLS_CERT_FILE=" + missing, "SLUICE_HTTP_TLS_KEY_FILE=" + files.KeyFile}, "SLUICE_HTTP_TLS_CERT_FILE=\"" + missing + "\": cannot read it"},
		{[]string{"SLUICE_HTTP_TLS_CERT_FILE=" + notPEM, "SLUICE_HTTP_TLS_KEY_FILE=" + files.KeyFile}, "holds no PEM certificate"},
		{[]string{"SLUICE_HTTP_TLS_CERT_FILE=" + files.CertFile, "SLUICE_HTTP_TLS_KEY_FILE=" + mismatched}, "is not the PEM private key of the certificate in http.tls.cert_file"},
		{[]string{"SLUICE_HTTP_TLS_CERT_FILE=" + files.CertFile, "SLUICE_HTTP_TLS_KEY_FILE=" + notPEM}, "SLUICE_HTTP_TLS_KEY_FILE=\"" + notPEM + "\": " + notPEM + " is not the PEM private key"},
		{[]string{"SLUICE_HTTP_TLS_CERT_FILE=" + files.CertFile, "SLUICE_HTTP_TLS_KEY_FILE=" + files.KeyFile, "SLUICE_HTTP_TLS_CLIENT_CA_FILE=" + notPEM}, "SLUICE_HTTP_TLS_CLIENT_CA_FILE=\"" + notPEM + "\": " + notPEM + " holds no PEM certificate"},
	} {
		_, _, err := Load("", c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want %q, got %v", c.env, c.want, err)
		}
	}
	// A good set loads; TLS does not lift the rule that a non-loopback listener needs tokens.
	good := []string{"SLUICE_HTTP_TLS_CERT_FILE=" + files.CertFile, "SLUICE_HTTP_TLS_KEY_FILE=" + files.KeyFile, "SLUICE_HTTP_TLS_CLIENT_CA_FILE=" + filepath.Join(dir, "ca.crt")}
	if _, _, err := Load("", good); err != nil {
		t.Fatalf("good files refused: %v", err)
	}
	if _, _, err := Load("", append(good, "SLUICE_LISTEN=0.0.0.0:8443")); err == nil || !strings.Contains(err.Error(), "no tokens are configured") {
		t.Fatalf("mTLS without tokens on a non-loopback address: %v", err)
	}
}

// TestRedisTLSConfig: the Redis client's tls.Config carries tls_ca_file's roots and the client certificate. (No
// TLS Redis runs here: the handshake itself is the client library's.)
func TestRedisTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "redis CA")
	certPEM, keyPEM := ca.issue(t, 50, true)
	caFile := writeTo(t, filepath.Join(dir, "ca.crt"), ca.pem)
	certFile := writeTo(t, filepath.Join(dir, "client.crt"), certPEM)
	keyFile := writeTo(t, filepath.Join(dir, "client.key"), keyPEM)
	base := []string{"SLUICE_STORE=redis", "SLUICE_REDIS_ADDRS=redis.example:6380"}

	cfg, _, err := Load("", append(base, "SLUICE_REDIS_TLS_CA_FILE="+caFile, "SLUICE_REDIS_TLS_CERT_FILE="+certFile, "SLUICE_REDIS_TLS_KEY_FILE="+keyFile))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := cfg.Redis.redisTLS()
	if err != nil || tc == nil {
		t.Fatalf("tls config %v, %v", tc, err)
	}
	want := x509.NewCertPool()
	want.AddCert(ca.cert)
	if tc.RootCAs == nil || !tc.RootCAs.Equal(want) {
		t.Errorf("RootCAs are not tls_ca_file's CA")
	}
	block, _ := pem.Decode(certPEM)
	if len(tc.Certificates) != 1 || string(tc.Certificates[0].Certificate[0]) != string(block.Bytes) {
		t.Errorf("client certificate is not tls_cert_file's")
	}
	if tc.MinVersion != tls.VersionTLS12 || tc.InsecureSkipVerify {
		t.Errorf("MinVersion %x InsecureSkipVerify %v", tc.MinVersion, tc.InsecureSkipVerify)
	}

	// A CA file alone implies TLS, with no client certificate.
	cfg, _, err = Load("", append(base, "SLUICE_REDIS_TLS_CA_FILE="+caFile))
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := cfg.Redis.redisTLS(); err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 0 {
		t.Errorf("CA only: %+v, %v", tc, err)
	}
	// redis.tls alone: the system's roots (RootCAs nil).
	cfg, _, err = Load("", append(base, "SLUICE_REDIS_TLS=true"))
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := cfg.Redis.redisTLS(); err != nil || tc == nil || tc.RootCAs != nil || len(tc.Certificates) != 0 {
		t.Errorf("redis.tls only: %+v, %v", tc, err)
	}
	// Nothing: plain TCP.
	if tc, err := (RedisConfig{}).redisTLS(); err != nil || tc != nil {
		t.Errorf("no TLS settings: %+v, %v", tc, err)
	}
}

// TestRedisTLSRefused: bad redis.tls_* combinations and files stop start-up, naming the setting.
func TestRedisTLSRefused(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "redis CA")
	certPEM, keyPEM := ca.issue(t, 60, true)
	_, otherKey := ca.issue(t, 61, true)
	certFile := writeTo(t, filepath.Join(dir, "client.crt"), certPEM)
	keyFile := writeTo(t, filepath.Join(dir, "client.key"), keyPEM)
	mismatched := writeTo(t, filepath.Join(dir, "other.key"), otherKey)
	notPEM := writeTo(t, filepath.Join(dir, "not.pem"), []byte("hello\n"))
	missing := filepath.Join(dir, "missing.pem")
	base := []string{"SLUICE_STORE=redis", "SLUICE_REDIS_ADDRS=redis.example:6380"}
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"SLUICE_REDIS_TLS_CERT_FILE=" + certFile}, "SLUICE_REDIS_TLS_CERT_FILE=\"" + certFile + "\": needs redis.tls_key_file (SLUICE_REDIS_TLS_KEY_FILE) too"},
		{[]string{"SLUICE_REDIS_TLS_KEY_FILE=" + keyFile}, "SLUICE_REDIS_TLS_KEY_FILE=\"" + keyFile + "\": needs redis.tls_cert_file (SLUICE_REDIS_TLS_CERT_FILE) too"},
		{[]string{"SLUICE_REDIS_TLS_CA_FILE=" + missing}, "SLUICE_REDIS_TLS_CA_FILE=\"" + missing + "\": cannot read it"},
		{[]string{"SLUICE_REDIS_TLS_CA_FILE=" + notPEM}, notPEM + " holds no PEM certificate"},
		{[]string{"SLUICE_REDIS_TLS_CERT_FILE=" + notPEM, "SLUICE_REDIS_TLS_KEY_FILE=" + keyFile}, "SLUICE_REDIS_TLS_CERT_FILE=\"" + notPEM + "\": " + notPEM + " holds no PEM certificate"},
		{[]string{"SLUICE_REDIS_TLS_CERT_FILE=" + certFile, "SLUICE_REDIS_TLS_KEY_FILE=" + mismatched}, "is not the PEM private key of the certificate in redis.tls_cert_file"},
	} {
		_, _, err := Load("", append(base, c.env...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want %q, got %v", c.env, c.want, err)
		}
	}
}

// The RLS listener takes its certificate through certFiles too (a rotation is served without a restart): over
// mTLS a client with a certificate of the client CA reaches the health service and sees the server certificate
// of the files, and one without a client certificate is refused.
func TestRLSListenerServesTheCertificateFiles(t *testing.T) {
	dir, ca, files := tlsFiles(t)
	clientCert, clientKey := ca.issue(t, 20, true)
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.RLS.Listen = freePort(t)
	rules := t.TempDir()
	writeTo(t, filepath.Join(rules, "config.yaml"), []byte("domain: d\ndescriptors:\n  - {key: k, rate_limit: {unit: minute, requests_per_unit: 1}}\n"))
	cfg.RLS.ConfigDir = rules
	cfg.RLS.TLS = RLSTLS{CertFile: files.CertFile, KeyFile: files.KeyFile, ClientCAFile: filepath.Join(dir, "ca.crt")}
	runTLS(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	pair, err := tls.X509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(certs ...tls.Certificate) (*x509.Certificate, error) {
		cc, err := grpc.NewClient(cfg.RLS.Listen, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs})))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		var p peer.Peer
		if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			return nil, err
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0], nil
	}
	leaf, err := dial(pair)
	if err != nil || leaf.SerialNumber.Int64() != 10 {
		t.Fatalf("mTLS health check: %v %v", leaf, err)
	}
	if _, err := dial(); err == nil {
		t.Fatal("a client without a certificate was served")
	}
}
