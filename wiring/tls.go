package wiring

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
// then on when they changed (tlsreload.go). The CA file is read once:
// crypto/tls's hooks for a client see the certificates but not the host
// dialled, which a redirect or a proxy changes, so checking them against a
// bundle read again would mean dialling TLS ourselves (docs/deploy.md,
// known gaps).
func upstreamHTTPClient(t *config.UpstreamTLS, log *slog.Logger) (*http.Client, error) {
	if t == nil {
		return nil, nil
	}
	tc := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %v", err)
		}
		if tc.RootCAs, err = poolFromPEM("tls.ca_file", t.CAFile, pem); err != nil {
			return nil, err
		}
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

// poolFromPEM is the certificates of pem, read from the file at path.
func poolFromPEM(key, path string, pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", key, path)
	}
	return pool, nil
}

// callbackCredentials is TLS to a token callback, verified against the CA
// file as it is at each handshake (tlsreload.go).
func callbackCredentials(caFile string, log *slog.Logger) (credentials.TransportCredentials, error) {
	cas, err := reloadingCertPool("token.callback.ca_file", caFile, log)
	if err != nil {
		return nil, err
	}
	return &rootsCredentials{TransportCredentials: callbackTLS(cas.get()), roots: cas.get}, nil
}

func callbackTLS(roots *x509.CertPool) credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
}

// rootsCredentials are grpc's TLS credentials with the roots of each
// client handshake taken from roots() then.
type rootsCredentials struct {
	credentials.TransportCredentials
	roots func() *x509.CertPool
}

func (c *rootsCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return callbackTLS(c.roots()).ClientHandshake(ctx, authority, conn)
}

// OverrideServerName is not supported: ClientHandshake verifies the
// authority grpc dials.
func (c *rootsCredentials) OverrideServerName(string) error {
	return errors.New("gqlbridge: the token callback's credentials take no server name override")
}

func (c *rootsCredentials) Clone() credentials.TransportCredentials {
	return &rootsCredentials{TransportCredentials: c.TransportCredentials.Clone(), roots: c.roots}
}
