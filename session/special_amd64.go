package session

// specialBlocks is specialBlocksGeneric in SSE2 (special_amd64.s), which
// every amd64 processor has.
//
//go:noescape
func specialBlocks(s []byte) int
