package v2codec

import (
	"math"
	"strconv"
)

// float64pow10 holds the powers of ten that float64 represents exactly.
var float64pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat is strconv.ParseFloat(string(b), bits) with a fast path for
// the numbers JSON tensors are made of: up to 19 significant digits and a
// small exponent. There, mantissa and power of ten are exact float64s, so one
// multiplication or division rounds the decimal correctly to float64
// (Clinger's fast path). For bits == 32 the float64 is rounded again, which
// gives the correctly rounded float32 unless the float64 sits exactly on a
// float32 midpoint (float32 midpoints are float64s, and rounding is
// monotonic); that case, subnormals and overflow go to strconv.
func parseFloat(b []byte, bits int) (float64, error) {
	if f, ok := parseFloatFast(b, bits); ok {
		return f, nil
	}
	return strconv.ParseFloat(b2s(b), bits)
}

func parseFloatFast(b []byte, bits int) (float64, bool) {
	i, neg := 0, false
	if len(b) > 0 && b[0] == '-' {
		i, neg = 1, true
	}
	var mant uint64
	nd, exp, intDigits := 0, 0, 0
	for ; i < len(b) && b[i]-'0' <= 9; i++ {
		if mant != 0 || b[i] != '0' {
			if nd == 19 {
				return 0, false
			}
			mant = mant*10 + uint64(b[i]-'0')
			nd++
		}
		intDigits++
	}
	if intDigits == 0 {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		frac := 0
		for ; i < len(b) && b[i]-'0' <= 9; i++ {
			if mant != 0 || b[i] != '0' {
				if nd == 19 {
					return 0, false
				}
				mant = mant*10 + uint64(b[i]-'0')
				nd++
			}
			exp--
			frac++
		}
		if frac == 0 {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		e, ed := 0, 0
		for ; i < len(b) && b[i]-'0' <= 9; i++ {
			if e < 10000 {
				e = e*10 + int(b[i]-'0')
			}
			ed++
		}
		if ed == 0 {
			return 0, false
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if i != len(b) || mant > 1<<53 {
		return 0, false
	}
	f := float64(mant)
	switch {
	case mant == 0:
	case exp == 0:
	case exp > 0 && exp <= 22:
		f *= float64pow10[exp]
	case exp < 0 && exp >= -22:
		f /= float64pow10[-exp]
	default:
		return 0, false
	}
	if neg {
		f = -f
	}
	if bits == 32 && f != 0 {
		a := math.Abs(f)
		if a > math.MaxFloat32 || a < 0x1p-126 || math.Float64bits(f)&(1<<29-1) == 1<<28 {
			return 0, false
		}
		f = float64(float32(f))
	}
	return f, true
}

// parseDecimal parses an optionally negative run of decimal digits that fits
// uint64; ok is false for anything else (fractions, exponents, overflow).
func parseDecimal(b []byte) (neg bool, mag uint64, ok bool) {
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 20 {
		return neg, 0, false
	}
	for _, c := range b {
		c -= '0'
		if c > 9 || mag > (math.MaxUint64-uint64(c))/10 {
			return neg, 0, false
		}
		mag = mag*10 + uint64(c)
	}
	return neg, mag, true
}

// parseInt64 parses an integral JSON number (1, 1.0 and 1e0 alike) that fits
// int64.
func parseInt64(b []byte) (int64, bool) {
	if neg, mag, ok := parseDecimal(b); ok {
		if neg {
			if mag > 1<<63 {
				return 0, false
			}
			return int64(-mag), true
		}
		if mag > math.MaxInt64 {
			return 0, false
		}
		return int64(mag), true
	}
	f, err := strconv.ParseFloat(b2s(b), 64)
	if err != nil || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false
	}
	return int64(f), true
}
