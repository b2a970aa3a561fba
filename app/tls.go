package app

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckEvery is how often, at most, the HTTP listener's certificate files are read again (certFiles).
const certCheckEvery = time.Second

// settingError is a problem with one setting's value: validate reports it under that setting, and a start-up or
// reload error prints it as "setting: message".
type settingError struct{ setting, msg string }

func (e *settingError) Error() string { return e.setting + ": " + e.msg }

// reportSetting hands err to validate's reporter: under its setting when it is a settingError, else under
// fallback.
func reportSetting(err error, fallback string, add func(path, format string, args ...any)) {
	var se *settingError
	if errors.As(err, &se) {
		add(se.setting, "%s", se.msg)
		return
	}
	add(fallback, "%v", err)
}

// pemFile is a file named by a setting.
type pemFile struct{ setting, path string }

func (f pemFile) read() ([]byte, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, &settingError{f.setting, fmt.Sprintf("cannot read it: %v", err)}
	}
	return b, nil
}

// keyPair parses a PEM certificate chain (leaf first) and its private key; the error names the file at fault:
// cert when it holds no parseable certificate, key otherwise (missing, unparseable, or not the certificate's key).
func keyPair(cert, key pemFile, certPEM, keyPEM []byte) (tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err == nil {
		return c, nil
	}
	var block *pem.Block
	for rest := certPEM; ; {
		if block, rest = pem.Decode(rest); block == nil || block.Type == "CERTIFICATE" {
			break
		}
	}
	if block == nil {
		return tls.Certificate{}, &settingError{cert.setting, fmt.Sprintf("%s holds no PEM certificate (want a PEM \"CERTIFICATE\" block, the leaf first)", cert.path)}
	}
	if _, perr := x509.ParseCertificate(block.Bytes); perr != nil {
		return tls.Certificate{}, &settingError{cert.setting, fmt.Sprintf("%s: %v", cert.path, perr)}
	}
	return tls.Certificate{}, &settingError{key.setting, fmt.Sprintf("%s is not the PEM private key of the certificate in %s (%s): %v", key.path, cert.setting, cert.path, err)}
}

// certPool parses a PEM bundle of CA certificates.
func certPool(f pemFile, b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, &settingError{f.setting, fmt.Sprintf("%s holds no PEM certificate (want one or more PEM \"CERTIFICATE\" blocks)", f.path)}
	}
	return pool, nil
}

// certFiles is the HTTP listener's TLS: a certificate and key, and optionally a client CA (mTLS), read from PEM
// files that may be replaced while sluice runs (cert-manager rotates a Secret's files in place).
//
// Its TLSConfig answers every handshake from GetConfigForClient. When certCheckEvery (1s) or more has passed on
// now since the files were last read (or now went back), that handshake first reads the three files again and
// compares their bytes with the previous read (bytes, not modification times: a rewrite within the file system's
// timestamp granularity, or a Kubernetes Secret volume's symlink swap, is still seen). Changed files are parsed: a
// good set is served from this handshake on (and logged at info); a bad one (unreadable, not PEM, a key that does
// not match, a half-written rotation) is logged at error once per change and the last good certificate is kept. So
// a busy listener reads the files at most once a second, and a rotation is served by the first handshake at least
// a second after the previous read; connections already open keep the certificate they were made with.
type certFiles struct {
	cert, key, ca pemFile // ca.path is empty without mTLS
	log           *slog.Logger
	now           func() time.Time // the clock of the check interval: time.Now; tests advance their own

	mu      sync.Mutex
	checked time.Time   // when the files were last read
	seen    [3][]byte   // their contents at the last read that succeeded
	seenErr string      // why seen is not served ("" when it is)
	failed  string      // the failure last logged ("" when none since the last good read)
	current *tls.Config // built from the last good contents
}

// newCertFiles reads and parses the files (an error names the setting at fault); prefix is the settings' path
// ("http.tls").
func newCertFiles(prefix string, f HTTPTLS, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{
		cert: pemFile{prefix + ".cert_file", f.CertFile},
		key:  pemFile{prefix + ".key_file", f.KeyFile},
		ca:   pemFile{prefix + ".client_ca_file", f.ClientCAFile},
		log:  log, now: time.Now,
	}
	contents, err := c.read()
	if err != nil {
		return nil, err
	}
	if c.current, err = c.build(contents); err != nil {
		return nil, err
	}
	c.seen, c.checked = contents, c.now()
	return c, nil
}

// TLSConfig is the listener's configuration: TLS 1.2 or later, each handshake served by the current files.
func (c *certFiles) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return c.config(), nil },
	}
}

// config is the configuration of one handshake, after reading the files again when they are due.
func (c *certFiles) config() *tls.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.checked) >= certCheckEvery || now.Before(c.checked) {
		c.checked = now
		c.refresh()
	}
	return c.current
}

// refresh reads the files and serves them when they changed and are good (see certFiles); c.mu is held.
func (c *certFiles) refresh() {
	contents, err := c.read()
	switch {
	case err != nil:
		c.fail(err)
		return
	case bytes.Equal(contents[0], c.seen[0]) && bytes.Equal(contents[1], c.seen[1]) && bytes.Equal(contents[2], c.seen[2]):
		c.failed = c.seenErr
		return
	}
	c.seen = contents
	cfg, err := c.build(contents)
	if err != nil {
		c.seenErr = err.Error()
		c.fail(err)
		return
	}
	c.current, c.seenErr, c.failed = cfg, "", ""
	leaf := cfg.Certificates[0].Leaf
	c.log.Info("tls: serving the rotated certificate", "cert_file", c.cert.path, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
}

func (c *certFiles) fail(err error) {
	if err.Error() == c.failed {
		return
	}
	c.failed = err.Error()
	c.log.Error("tls: cannot load the changed certificate files; serving the last good certificate", "err", err)
}

func (c *certFiles) read() ([3][]byte, error) {
	var out [3][]byte
	var err error
	for i, f := range []pemFile{c.cert, c.key, c.ca} {
		if f.path == "" {
			continue
		}
		if out[i], err = f.read(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// build parses contents (cert, key, client CA) into one handshake's configuration.
func (c *certFiles) build(contents [3][]byte) (*tls.Config, error) {
	cert, err := keyPair(c.cert, c.key, contents[0], contents[1])
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, &settingError{c.cert.setting, err.Error()}
		}
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if c.ca.path != "" {
		pool, err := certPool(c.ca, contents[2])
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// validateHTTPTLS checks http.tls: cert_file and key_file together, client_ca_file only with them, and the files
// readable and parseable now (the listener reads them again when they change).
func validateHTTPTLS(c Config, add func(path, format string, args ...any)) {
	f := c.HTTP.TLS
	switch {
	case f.CertFile == "" && f.KeyFile == "":
		if f.ClientCAFile != "" {
			add("http.tls.client_ca_file", "needs http.tls.cert_file and http.tls.key_file (HTTPS): client certificates are asked for only over TLS")
		}
		return
	case f.CertFile == "":
		add("http.tls.key_file", "needs http.tls.cert_file (SLUICE_HTTP_TLS_CERT_FILE) too: set both for HTTPS, or neither for plain HTTP")
		return
	case f.KeyFile == "":
		add("http.tls.cert_file", "needs http.tls.key_file (SLUICE_HTTP_TLS_KEY_FILE) too: set both for HTTPS, or neither for plain HTTP")
		return
	}
	if _, err := newCertFiles("http.tls", f, slog.New(slog.DiscardHandler)); err != nil {
		reportSetting(err, "http.tls", add)
	}
}

// redisTLS is the Redis client's TLS configuration (nil: plain TCP): TLS when redis.tls or any redis.tls_*_file
// is set; tls_ca_file replaces the system's roots; tls_cert_file and tls_key_file are the client certificate.
// The server's name is verified as the host of the address dialled (the client's tls.Dialer fills it in).
func (rc RedisConfig) redisTLS() (*tls.Config, error) {
	if !rc.TLS && rc.TLSCAFile == "" && rc.TLSCertFile == "" && rc.TLSKeyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if rc.TLSCAFile != "" {
		ca := pemFile{"redis.tls_ca_file", rc.TLSCAFile}
		b, err := ca.read()
		if err != nil {
			return nil, err
		}
		if cfg.RootCAs, err = certPool(ca, b); err != nil {
			return nil, err
		}
	}
	switch {
	case rc.TLSCertFile == "" && rc.TLSKeyFile == "":
	case rc.TLSCertFile == "":
		return nil, &settingError{"redis.tls_key_file", "needs redis.tls_cert_file (SLUICE_REDIS_TLS_CERT_FILE) too: a client certificate is both files, or neither"}
	case rc.TLSKeyFile == "":
		return nil, &settingError{"redis.tls_cert_file", "needs redis.tls_key_file (SLUICE_REDIS_TLS_KEY_FILE) too: a client certificate is both files, or neither"}
	default:
		cert, key := pemFile{"redis.tls_cert_file", rc.TLSCertFile}, pemFile{"redis.tls_key_file", rc.TLSKeyFile}
		cb, err := cert.read()
		if err != nil {
			return nil, err
		}
		kb, err := key.read()
		if err != nil {
			return nil, err
		}
		pair, err := keyPair(cert, key, cb, kb)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
