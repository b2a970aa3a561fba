package envoyrls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMTLSWithEnvoyClient: envoyproxy/ratelimit's client_cmd over mTLS, as Envoy Gateway's proxies call their
// rate-limit service: with a client certificate signed by rls.tls.client_ca_file it is answered (no bearer token
// needed, though sluice has tokens), without one the handshake fails.
func TestMTLSWithEnvoyClient(t *testing.T) {
	tl := setup(t)
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "sluice test ca", true)
	srv, srvKey := newCert(t, ca, caKey, "sluice", false)
	cli, cliKey := newCert(t, ca, caKey, "envoy", false)
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.Raw)
	writePEM(t, filepath.Join(dir, "tls.crt"), "CERTIFICATE", srv.Raw)
	writeKey(t, filepath.Join(dir, "tls.key"), srvKey)
	writePEM(t, filepath.Join(dir, "client.crt"), "CERTIFICATE", cli.Raw)
	writeKey(t, filepath.Join(dir, "client.key"), cliKey)
	addr := startSluiceTLS(t, tl.sluice, dir, configDir(t, dir))

	run := func(args ...string) (string, error) {
		all := append([]string{"-dial_string", addr, "-domain", "contour", "-descriptors", "generic_key=foo", "-grpc-use-tls",
			"-grpc-server-ca-file", filepath.Join(dir, "ca.crt")}, args...)
		out, err := exec.Command(tl.client, all...).CombinedOutput()
		return string(out), err
	}
	out, err := run("-grpc-cert-file", filepath.Join(dir, "client.crt"), "-grpc-key-file", filepath.Join(dir, "client.key"))
	if err != nil || !regexp.MustCompile(`overall_code:\s*OK`).MatchString(out) {
		t.Errorf("with a client certificate: %v\n%s", err, out)
	}
	out, err = run()
	if err == nil && strings.Contains(out, "response:") {
		t.Errorf("without a client certificate the call was answered:\n%s", out)
	}
}

// startSluiceTLS runs sluice with a token (so only mTLS can let client_cmd in) and the RLS listener on mTLS with
// dir's tls.crt, tls.key and ca.crt. It waits for the port to accept: the plain-text health check cannot pass a
// TLS listener.
func startSluiceTLS(t *testing.T, bin, dir, cd string) string {
	t.Helper()
	ports := freePorts(t, 2)
	rls := fmt.Sprintf("127.0.0.1:%d", ports[0])
	y := fmt.Sprintf(`listen: 127.0.0.1:%d
log: {level: warn}
tokens: [{name: admin, token: %s, role: admin}]
rls:
  listen: %s
  config_dir: %s
  tls: {cert_file: %s, key_file: %s, client_ca_file: %s}
`, ports[1], strings.Repeat("t", 24), rls, cd, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt"))
	cfg := filepath.Join(dir, "sluice-tls.yaml")
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(dir, "sluice-tls.log")
	start(t, exec.Command(bin, "serve", "-config", cfg), logs)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", rls, time.Second)
		if err == nil {
			c.Close()
			return rls
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logs)
			t.Fatalf("%s did not open: %v\n%s", rls, err, b)
		}
		time.Sleep(50 * time.Millisecond)
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
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}
