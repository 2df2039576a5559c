// Package fuzzinput turns a fuzz target's bytes into the small choices an
// input generator makes (a byte, a number below n, a coin flip, one of a few
// options). Once the bytes are used up every choice is 0, so any input
// builds a (smaller) valid value. Test support only; imports nothing of
// podwall's.
package fuzzinput

// Input hands out the fuzz bytes as small numbers.
type Input struct {
	data []byte
}

// New returns an Input reading data.
func New(data []byte) *Input { return &Input{data: data} }

// Byte returns the next byte, or 0 when none is left.
func (in *Input) Byte() byte {
	if len(in.data) == 0 {
		return 0
	}
	b := in.data[0]
	in.data = in.data[1:]
	return b
}

// Take returns the next n bytes (fewer when the input runs out).
func (in *Input) Take(n int) []byte {
	n = min(max(n, 0), len(in.data))
	b := in.data[:n]
	in.data = in.data[n:]
	return b
}

// Intn returns a number in [0, n).
func (in *Input) Intn(n int) int {
	if n <= 1 {
		return 0
	}
	v := int(in.Byte())
	if n > 256 {
		v = v<<8 | int(in.Byte())
	}
	return v % n
}

// Bool returns a coin flip.
func (in *Input) Bool() bool { return in.Byte()&1 == 1 }

// Pick returns one of options.
func Pick[T any](in *Input, options ...T) T { return options[in.Intn(len(options))] }
