package client

import (
	"strings"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/health" // client-side health checking (ServiceConfig's healthCheckConfig)
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
)

// ServiceConfig is the gRPC service config callers of the bridge should
// use: round robin spreads the streams over every address the target
// resolves to (every replica behind the headless Service), and client-side
// health checking on graphqlbridge.v1.SubscriptionService stops picking a
// replica the moment it starts draining (its health turns NOT_SERVING).
const ServiceConfig = `{"loadBalancingConfig":[{"round_robin":{}}],` +
	`"healthCheckConfig":{"serviceName":"graphqlbridge.v1.SubscriptionService"}}`

// Keepalive is the client keepalive DialOptions sets: a ping after 30 s
// without traffic, the connection closed when it goes unanswered for 10 s.
// The bridge accepts a ping every 10 s at most, with or without streams,
// and closes the connection of a client that pings more often.
var Keepalive = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// DialOptions are the dial options callers of the bridge should use:
// ServiceConfig and Keepalive. Add the transport credentials.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultServiceConfig(ServiceConfig),
		grpc.WithKeepaliveParams(Keepalive),
	}
}

// StaticAddresses returns a target and the dial option that resolves it to
// the given addresses ("host:port"), for callers that know the replicas'
// addresses instead of a DNS name that lists them (a headless Service's
// dns:///NAME:PORT). Pass both to grpc.NewClient, with DialOptions:
//
//	target, resolve := client.StaticAddresses("10.0.0.1:50051", "10.0.0.2:50051")
//	conn, err := grpc.NewClient(target, append(client.DialOptions(), resolve, creds)...)
func StaticAddresses(addrs ...string) (target string, opt grpc.DialOption) {
	b := staticBuilder{}
	for _, a := range addrs {
		b.addrs = append(b.addrs, resolver.Address{Addr: a})
	}
	return staticScheme + ":///" + strings.Join(addrs, ","), grpc.WithResolvers(b)
}

const staticScheme = "gqlbridge-static"

// staticBuilder resolves every target to its fixed addresses, once.
type staticBuilder struct{ addrs []resolver.Address }

func (b staticBuilder) Scheme() string { return staticScheme }

func (b staticBuilder) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	if err := cc.UpdateState(resolver.State{Addresses: b.addrs}); err != nil {
		cc.ReportError(err)
	}
	return staticResolver{}, nil
}

type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}
