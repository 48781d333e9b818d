package credential

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// OAuth2 obtains tokens with the OAuth 2.0 client-credentials grant.
type OAuth2 struct {
	client     *http.Client
	secretFile string // when set, the client secret is read from it for each token

	mu  sync.Mutex
	cfg *clientcredentials.Config
}

// NewOAuth2 returns a client-credentials source. client may be nil.
func NewOAuth2(tokenURL, clientID, clientSecret string, scopes []string, params map[string][]string, client *http.Client) *OAuth2 {
	return &OAuth2{cfg: &clientcredentials.Config{ClientID: clientID, ClientSecret: clientSecret, TokenURL: tokenURL,
		Scopes: scopes, EndpointParams: params}, client: client}
}

// NewOAuth2SecretFile is NewOAuth2 with the client secret read from
// secretFile (surrounding white space trimmed) for every token it requests,
// so that a rotated secret is used from the next token on, without a
// restart.
func NewOAuth2SecretFile(tokenURL, clientID, secretFile string, scopes []string, params map[string][]string, client *http.Client) *OAuth2 {
	o := NewOAuth2(tokenURL, clientID, "", scopes, params, client)
	o.secretFile = secretFile
	return o
}

// config returns the grant's configuration with the current secret.
func (o *OAuth2) config() (*clientcredentials.Config, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.secretFile == "" {
		return o.cfg, nil
	}
	b, err := os.ReadFile(o.secretFile)
	if err != nil {
		return nil, fmt.Errorf("credential: oauth2 client_secret_file: %v", err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return nil, fmt.Errorf("credential: oauth2 client_secret_file %s is empty", o.secretFile)
	}
	if secret != o.cfg.ClientSecret {
		// A new configuration, not a copy: it caches how the endpoint
		// takes the secret.
		c := o.cfg
		o.cfg = &clientcredentials.Config{ClientID: c.ClientID, ClientSecret: secret, TokenURL: c.TokenURL,
			Scopes: c.Scopes, EndpointParams: c.EndpointParams}
	}
	return o.cfg, nil
}

// Token requests a new token from the token endpoint.
func (o *OAuth2) Token(ctx context.Context, _ Request) (Token, error) {
	cfg, err := o.config()
	if err != nil {
		return Token{}, err
	}
	if o.client != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, o.client)
	}
	t, err := cfg.Token(ctx)
	if err != nil {
		// oauth2's errors quote the endpoint's response body, which never
		// holds our secret; they never include the client secret.
		return Token{}, fmt.Errorf("credential: oauth2 client credentials from %s: %w", cfg.TokenURL, err)
	}
	return Token{Value: t.AccessToken, Expiry: t.Expiry}, nil
}
