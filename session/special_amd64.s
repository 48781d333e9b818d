#include "textflag.h"

// Sixteen copies each of '"', '\\' and 0x1f.
DATA specialBytes<>+0x00(SB)/8, $0x2222222222222222
DATA specialBytes<>+0x08(SB)/8, $0x2222222222222222
DATA specialBytes<>+0x10(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA specialBytes<>+0x18(SB)/8, $0x5c5c5c5c5c5c5c5c
DATA specialBytes<>+0x20(SB)/8, $0x1f1f1f1f1f1f1f1f
DATA specialBytes<>+0x28(SB)/8, $0x1f1f1f1f1f1f1f1f
GLOBL specialBytes<>(SB), RODATA|NOPTR, $48

// SPECIAL16 sets each byte of m to 0xff where the byte of x is '"' (X1),
// '\\' (X2) or below 0x20 (min(x, 0x1f) == x, unsigned; X3 holds 0x1f),
// and to 0 elsewhere. t and u are scratch.
#define SPECIAL16(x, m, t, u) \
	MOVOU   x, m; \
	PCMPEQB X1, m; \
	MOVOU   x, t; \
	PCMPEQB X2, t; \
	MOVOU   x, u; \
	PMINUB  X3, u; \
	PCMPEQB x, u; \
	POR     t, m; \
	POR     u, m

// func specialBlocks(s []byte) int
//
// Each 16 bytes of s through SPECIAL16; the first set bit of the mask is
// the first special byte. Two blocks per step while there are two.
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
	CMPQ      AX, BX
	JGT       single
	MOVOU     (SI)(AX*1), X0
	MOVOU     16(SI)(AX*1), X7
	SPECIAL16(X0, X4, X5, X6)
	SPECIAL16(X7, X8, X9, X10)
	PMOVMSKB  X4, DX
	PMOVMSKB  X8, R8
	SHLQ      $16, R8
	ORQ       R8, DX
	TESTQ     DX, DX
	JNZ       found
	ADDQ      $32, AX
	JMP       pairs

single:
	CMPQ      AX, CX
	JGE       none
	MOVOU     (SI)(AX*1), X0
	SPECIAL16(X0, X4, X5, X6)
	PMOVMSKB  X4, DX
	TESTQ     DX, DX
	JNZ       found

none:
	MOVQ CX, ret+24(FP)
	RET

found:
	BSFQ DX, DX
	ADDQ DX, AX
	MOVQ AX, ret+24(FP)
	RET
