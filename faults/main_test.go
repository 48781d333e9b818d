package faults

import (
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Toxiproxy logs through zerolog; some toxics use zerolog's global
	// logger, which writes to stderr. The tests read outcomes, not logs.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	goleak.VerifyTestMain(m,
		// Toxiproxy itself, not the bridge, strands goroutines when a toxic
		// ends a connection: reset_peer and limit_data close their stub and
		// return, and removing a timeout toxic closes its stub (Cleanup),
		// after which nothing ever reads that stub's input channel again.
		// A chunk the upstream sent in that instant leaves the link's noop
		// stub blocked sending it (toxics/noop.go), and the link's reader
		// blocked handing it the next one (stream/io_chan.go). Both are
		// unbuffered channel sends no toxiproxy API can unblock: Proxy.Stop
		// closes the sockets, not the channels. Only these two toxiproxy
		// functions are ignored; a bridge goroutine never has them on top.
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/stream.(*ChanWriter).Write"),
	)
}
