package v2codec

import (
	"math"
	"math/big"
	"strconv"

	"github.com/ipa-serving/ipa/models"
	"github.com/valyala/fastjson"
)

// maxTieText bounds the number text whose exact value is worked out with
// math/big when it parses to a float64 exactly halfway between two FP16
// values. A tie needs a magnitude within FP16's range, so the text's exponent
// is bounded by its length and big.Rat stays cheap.
const maxTieText = 100

// half parses a JSON number into IEEE 754 binary16, rounded once to nearest
// even.
func (d *decoder) half(t *models.Tensor, idx int, v *fastjson.Value) (uint16, error) {
	if v.Type() != fastjson.TypeNumber {
		f, err := d.float(t, idx, v, 64)
		if err != nil {
			return 0, err
		}
		h, _ := f16FromF64(f, nearestEven)
		return h, nil
	}
	f, err := d.float(t, idx, v, 64)
	if err != nil {
		return 0, err
	}
	h, tie := f16FromF64(f, nearestEven)
	if tie && len(d.num) <= maxTieText {
		// Decimal → float64 → binary16 rounds twice; the first rounding
		// can land exactly on a binary16 midpoint only from a decimal
		// that is not exactly there, so look at the decimal itself.
		if r, ok := new(big.Rat).SetString(b2s(d.num)); ok {
			m := new(big.Rat).SetFloat64(f)
			switch r.Abs(r).Cmp(m.Abs(m)) {
			case 1:
				h, _ = f16FromF64(f, awayFromZero)
			case -1:
				h, _ = f16FromF64(f, towardZero)
			}
		}
	}
	if h&0x7fff == 0x7c00 && !math.IsInf(f, 0) {
		return 0, d.errorf("%s %q: data element %d (%s) overflows FP16 (largest finite value 65504)", d.what, t.Name, idx, d.num)
	}
	return h, nil
}

// roundMode selects how f16FromF64 rounds.
type roundMode uint8

const (
	nearestEven roundMode = iota
	towardZero
	awayFromZero
)

// f16FromF64 converts f to IEEE 754 binary16 bits. tie reports that f lies
// exactly halfway between two binary16 values. Overflow gives ±Inf (or the
// largest finite value toward zero); NaN stays NaN with its sign and the top
// of its payload, and quiet.
func f16FromF64(f float64, mode roundMode) (h uint16, tie bool) {
	b := math.Float64bits(f)
	sign := uint16(b>>48) & 0x8000
	exp := int(b>>52) & 0x7ff
	mant := b & (1<<52 - 1)
	if exp == 0x7ff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>42), false
		}
		return sign | 0x7c00, false
	}
	if exp == 0 && mant == 0 {
		return sign, false
	}
	e := exp - 1023
	if e >= 16 { // ≥ 65536
		if mode == towardZero {
			return sign | 0x7bff, false
		}
		return sign | 0x7c00, false
	}
	sig := 1<<52 | mant
	var m uint64 // result magnitude bits before rounding
	var shift uint
	if e >= -14 { // normal binary16
		shift = 42
		m = uint64(e+15)<<10 | mant>>42
	} else { // subnormal binary16: units of 2^-24
		shift = uint(28 - e)
		if shift > 63 || exp == 0 { // far below half of 2^-24
			if mode == awayFromZero {
				return sign | 1, false
			}
			return sign, false
		}
		m = sig >> shift
	}
	rest := sig & (1<<shift - 1)
	halfway := uint64(1) << (shift - 1)
	tie = rest == halfway
	switch mode {
	case nearestEven:
		if rest > halfway || tie && m&1 == 1 {
			m++ // a carry moves into the exponent, up to 0x7c00 (Inf)
		}
	case awayFromZero:
		if rest != 0 {
			m++
		}
	}
	return sign | uint16(m), tie
}

// f16ToF32 converts IEEE 754 binary16 bits to float32 exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0:
		f := float32(mant) / (1 << 24) // exact: a power-of-two scaling
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// appendHalf writes binary16 h with the fewest significant digits (at most 5)
// that read back to h, so 0.1 stays "0.1" instead of float32's 0.099975586.
func appendHalf(dst []byte, h uint16) []byte {
	f := float64(f16ToF32(h))
	if h&0x7c00 == 0x7c00 || f == 0 {
		return appendFloat(dst, f, 64)
	}
	var buf [32]byte
	for prec := 0; prec < 5; prec++ {
		s := strconv.AppendFloat(buf[:0], f, 'e', prec, 64)
		g, err := strconv.ParseFloat(b2s(s), 64)
		if err != nil {
			break
		}
		if back, tie := f16FromF64(g, nearestEven); back == h && !tie {
			// g is the float64 nearest a ≤5-digit decimal, so its
			// shortest float64 form is that decimal.
			return appendFloat(dst, g, 64)
		}
	}
	return appendFloat(dst, f, 32)
}
