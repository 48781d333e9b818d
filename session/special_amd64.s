#include "textflag.h"

// Sixteen copies each of '"', '\\' and 0x1f.
DATA specialBytes<>+0x00(SB)/8, $0x2222222222222222
DATA specialBytes<>+0x08(SB)/8, $0x2222222222222222
DATA specialBytes<>+0x10(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA specialBytes<>+0x18(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA specialBytes<>+0x20(SB)/8, $0x1f1f1f1f1f1f1f1f
DATA specialBytes<>+0x28(SB)/8, $0x1f1f1f1f1f1f1f1f
GLOBL specialBytes<>(SB), RODATA|NOPTR, $48

// func specialBlocks(s []byte) int
//
// For each 16 bytes x of s: x == '"', x == '\\', and min(x, 0x1f) == x
// (x below 0x20, unsigned), or-ed into one mask whose first set bit is the
// first special byte. Two blocks per step while there are two.
TEXT ·specialBlocks(SB), NOSPLIT, $0-32
	MOVQ  s_base+0(FP), SI
	MOVQ  s_len+8(FP), CX
	ANDQ  $-16, CX
	MOVOU specialBytes<>+0x00(SB), X1
	MOVOU specialBytes<>+0x10(SB), X2
	MOVOU specialBytes<>+0x20(SB), X3
	XORQ  AX, AX
	LEAQ  -32(CX), BX // the last offset with two blocks after it

	PCALIGN $32
pairs:
	CMPQ     AX, BX
	JGT      single
	MOVOU    (SI)(AX*1), X0
	MOVOU    16(SI)(AX*1), X7
	MOVOU    X0, X4
	PCMPEQB  X1, X4
	MOVOU    X0, X5
	PCMPEQB  X2, X5
	MOVOU    X0, X6
	PMINUB   X3, X6
	PCMPEQB  X0, X6
	POR      X5, X4
	POR      X6, X4
	MOVOU    X7, X8
	PCMPEQB  X1, X8
	MOVOU    X7, X9
	PCMPEQB  X2, X9
	MOVOU    X7, X10
	PMINUB   X3, X10
	PCMPEQB  X7, X10
	POR      X9, X8
	POR      X10, X8
	PMOVMSKB X4, DX
	PMOVMSKB X8, R8
	SHLQ     $16, R8
	ORQ      R8, DX
	TESTQ    DX, DX
	JNZ      found
	ADDQ     $32, AX
	JMP      pairs

single:
	CMPQ     AX, CX
	JGE      none
	MOVOU    (SI)(AX*1), X0
	MOVOU    X0, X4
	PCMPEQB  X1, X4
	MOVOU    X0, X5
	PCMPEQB  X2, X5
	MOVOU    X0, X6
	PMINUB   X3, X6
	PCMPEQB  X0, X6
	POR      X5, X4
	POR      X6, X4
	PMOVMSKB X4, DX
	TESTQ    DX, DX
	JNZ      found

none:
	MOVQ CX, ret+24(FP)
	RET

found:
	BSFQ DX, DX
	ADDQ DX, AX
	MOVQ AX, ret+24(FP)
	RET
