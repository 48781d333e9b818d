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
	"net/url"

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

// upstreamHTTPClient carries an upstream's TLS settings for its URL. The
// client certificate and its key, and the CA file, are read again at each
// handshake and used from then on when they changed (tlsreload.go).
func upstreamHTTPClient(rawURL string, t *config.UpstreamTLS, log *slog.Logger) (*http.Client, error) {
	if t == nil {
		return nil, nil
	}
	tc := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		cas, err := reloadingCertPool("tls.ca_file", t.CAFile, log)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = cas.get()
		if !t.InsecureSkipVerify {
			u, err := url.Parse(rawURL)
			if err != nil {
				return nil, fmt.Errorf("url: %v", err)
			}
			// crypto/tls's own check, against the roots it was given, is
			// replaced by the same check against the roots of each
			// handshake.
			tc.InsecureSkipVerify = true
			tc.VerifyConnection = func(cs tls.ConnectionState) error {
				return verifyServer(cs, cas.get(), verifiedName(t.ServerName, cs.ServerName, u.Hostname()))
			}
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

// verifiedName is the name a server's certificate must hold, as crypto/tls
// would check it: server_name when set, else the host dialled. That host
// is the SNI the transport sent (sni), except for an IP address, which is
// sent without SNI: then it is urlHost, the URL's, which a redirect to
// another IP address would leave unchanged (a name the upstream itself
// redirected from, over a verified connection). A redirect from a name to
// an IP address cannot be told from here; it is refused (no name matches
// "").
func verifiedName(serverName, sni, urlHost string) string {
	switch {
	case serverName != "":
		return serverName
	case sni != "":
		return sni
	case net.ParseIP(urlHost) != nil:
		return urlHost
	}
	return ""
}

// verifyServer is crypto/tls's verification of a server's certificate
// chain for name against roots, with its error.
func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return &tls.CertificateVerificationError{Err: errors.New("the server sent no certificate")}
	}
	if name == "" {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates,
			Err: errors.New("no server name to verify the certificate for (a redirect to an IP address?)")}
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: name, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
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
