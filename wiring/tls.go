package wiring

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"google.golang.org/grpc/credentials"

	"github.com/gqlbridge/gqlbridge/config"
)

// serverCredentials is TLS, and mutual TLS with client_ca_file. The
// certificate, its key and the client CA are read again at each handshake
// and used from then on when they changed (tlsreload.go).
func serverCredentials(t *config.ServerTLS, log *slog.Logger) (credentials.TransportCredentials, error) {
	pair, err := reloadingKeyPair("server.tls", t.CertFile, t.KeyFile, log)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return pair.get(), nil }}
	if t.ClientCAFile != "" {
		cas, err := reloadingCertPool("server.tls.client_ca_file", t.ClientCAFile, log)
		if err != nil {
			return nil, err
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		// grpc's credentials add their defaults (ALPN h2) to the config
		// this returns, as to tc.
		base := tc.Clone()
		tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientCAs = cas.get()
			return c, nil
		}
	}
	return credentials.NewTLS(tc), nil
}

// upstreamHTTPClient carries an upstream's TLS settings. The client
// certificate and its key are read again at each handshake and used from
// then on when they changed (tlsreload.go); the CA file is read once.
func upstreamHTTPClient(t *config.UpstreamTLS, log *slog.Logger) (*http.Client, error) {
	if t == nil {
		return nil, nil
	}
	tc := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pool, err := certPool("tls.ca_file", t.CAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		pair, err := reloadingKeyPair("tls.cert_file/key_file", t.CertFile, t.KeyFile, log)
		if err != nil {
			return nil, err
		}
		tc.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			// As with Certificates: none when the server would refuse it.
			if c := pair.get(); cri.SupportsCertificate(c) == nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr}, nil
}

// certPool reads the PEM certificates of the file at path, named by its
// configuration key in errors.
func certPool(key, path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", key, err)
	}
	return poolFromPEM(key, path, pem)
}

// poolFromPEM is the certificates of pem, read from the file at path.
func poolFromPEM(key, path string, pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", key, path)
	}
	return pool, nil
}
