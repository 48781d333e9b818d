//go:build !amd64

package session

func specialBlocks(s []byte) int { return specialBlocksGeneric(s) }
