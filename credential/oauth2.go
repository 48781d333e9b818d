package credential

import (
	"context"
	"fmt"
	"net/http"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// OAuth2 obtains tokens with the OAuth 2.0 client-credentials grant.
type OAuth2 struct {
	cfg    clientcredentials.Config
	client *http.Client
}

// NewOAuth2 returns a client-credentials source. client may be nil.
func NewOAuth2(tokenURL, clientID, clientSecret string, scopes []string, params map[string][]string, client *http.Client) *OAuth2 {
	return &OAuth2{cfg: clientcredentials.Config{ClientID: clientID, ClientSecret: clientSecret, TokenURL: tokenURL,
		Scopes: scopes, EndpointParams: params}, client: client}
}

// Token requests a new token from the token endpoint.
func (o *OAuth2) Token(ctx context.Context, _ Request) (Token, error) {
	if o.client != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, o.client)
	}
	t, err := o.cfg.Token(ctx)
	if err != nil {
		// oauth2's errors quote the endpoint's response body, which never
		// holds our secret; they never include the client secret.
		return Token{}, fmt.Errorf("credential: oauth2 client credentials from %s: %w", o.cfg.TokenURL, err)
	}
	return Token{Value: t.AccessToken, Expiry: t.Expiry}, nil
}
