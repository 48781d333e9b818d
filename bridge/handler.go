package bridge

import (
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// Subscribe runs one subscription for one caller.
func (s *Server) Subscribe(req *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	// Only the name outlives subscribe: the request (its variables decoded
	// into maps) is garbage once the operation started, not held for the
	// life of the stream.
	upstream := req.GetUpstream()
	var err error
	if s.enter() {
		defer s.leave()
		err = s.subscribe(req, stream)
	} else {
		err = ErrDraining
	}
	st := Status(upstream, err)
	if s.cfg.Metrics != nil && s.pools[upstream] != nil {
		reason := ""
		if d := st.Details(); len(d) > 0 {
			if info, ok := d[0].(interface{ GetReason() string }); ok {
				reason = info.GetReason()
			}
		}
		s.cfg.Metrics.terminated(upstream, st.Code().String(), reason)
	}
	return st.Err()
}

func (s *Server) subscribe(req *bridgev1.SubscribeRequest, stream grpc.ServerStreamingServer[bridgev1.SubscribeResponse]) error {
	ctx := stream.Context()
	// Authorize first: an unauthenticated caller learns nothing, not even
	// which upstreams exist.
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(ctx, req.GetUpstream()); err != nil {
			return err
		}
	}
	pool, sreq, err := s.validate(req)
	if err != nil {
		return err
	}
	maxBatch := int(req.GetMaxBatch())
	identity := ""
	if s.cfg.Identity != nil {
		if identity, err = s.cfg.Identity(ctx, req.GetUpstream()); err != nil {
			return err
		}
	}
	if n := s.total.Add(1); s.cfg.MaxSubscriptions > 0 && n > int64(s.cfg.MaxSubscriptions) {
		s.total.Add(-1)
		return &RequestError{Code: codes.ResourceExhausted, Reason: ReasonLimitReached,
			Msg: fmt.Sprintf("the bridge serves at most %d subscriptions; retry later or on another replica", s.cfg.MaxSubscriptions)}
	}
	defer s.total.Add(-1)
	release, err := pool.reserve()
	if err != nil {
		return err
	}
	defer release()

	key := ""
	if pool.up.Dedup {
		key = dedupKey(identity, sreq)
	}
	sub := newSubscriber(queueConfig{size: pool.up.QueueSize, maxBytes: pool.up.QueueMaxBytes, policy: pool.up.SlowPolicy,
		onDrop: s.cfg.Metrics.dropCounter(pool.name), budget: s.budget})
	// Deferred first, so it runs after detach: then nothing is pushed any
	// more, and what the queue holds leaves the server's budget.
	defer sub.discard()
	detach, err := pool.attach(identity, sreq, key, sub)
	if err != nil {
		return err
	}
	defer detach()
	return s.pump(ctx, pool.name, sub, stream, maxBatch)
}

// dedupKey identifies identical subscriptions: with resume, those that
// start from the same cursor (see resume.go for when they may join).
func dedupKey(identity string, r session.Request) string {
	return strings.Join([]string{identity, r.Query, r.OperationName, string(r.Variables), string(r.Extensions), resumeKey(r.Resume)}, "\x00")
}
