package glue

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
)

// DecodeImageData decodes an image as clients send it in a V2 BYTES element
// or a request body: PNG or JPEG bytes, or those bytes in base64 (how JSON
// clients carry binary data: KServe's and Triton's clients with
// "content_type":"base64", OpenVINO's "b64"). Base64 is recognised in its
// standard and URL-safe alphabets, padded or not, with line breaks or spaces
// anywhere, and behind a data URL prefix ("data:image/png;base64,"). It
// decodes only when the result starts with a PNG or JPEG signature, so raw
// image bytes are never mistaken for base64. Errors are DecodeImage's; data
// that is neither an image nor base64 of one wraps ErrNotImage and says so.
func DecodeImageData(b []byte) (image.Image, error) {
	return decodeImageData(b, MaxPixels)
}

// DecodeImageDataWithin is DecodeImageData with another pixel limit (a
// request's remaining budget when it carries several images); a limit over
// MaxPixels is MaxPixels.
func DecodeImageDataWithin(b []byte, maxPixels int) (image.Image, error) {
	return decodeImageData(b, min(maxPixels, MaxPixels))
}

func decodeImageData(b []byte, maxPixels int) (image.Image, error) {
	if len(b) == 0 || bytes.HasPrefix(b, pngMagic) || bytes.HasPrefix(b, jpegMagic) {
		return decodeImage(b, maxPixels)
	}
	raw, err := unbase64(b)
	if err != nil {
		head := b[:min(len(b), 8)]
		return nil, fmt.Errorf("%w (starts with %q): send PNG or JPEG bytes, or their base64 (standard or URL-safe); %v", ErrNotImage, head, err)
	}
	if len(raw) < len(pngMagic) && len(raw) > 1 && (bytes.HasPrefix(pngMagic, raw) || bytes.HasPrefix(jpegMagic, raw)) {
		return nil, fmt.Errorf("%w: base64 of an image that ends after %d bytes", ErrTruncated, len(raw))
	}
	if !bytes.HasPrefix(raw, pngMagic) && !bytes.HasPrefix(raw, jpegMagic) {
		return nil, fmt.Errorf("%w: the data is base64 but decodes to bytes starting with %q, not a PNG or JPEG signature", ErrNotImage, raw[:min(len(raw), 8)])
	}
	return decodeImage(raw, maxPixels)
}

// maxBase64Prefix is the longest data URL prefix unbase64 skips.
const maxBase64Prefix = 100

// unbase64 decodes b as base64 in any common spelling.
func unbase64(b []byte) ([]byte, error) {
	if bytes.HasPrefix(b, []byte("data:")) {
		i := bytes.Index(b[:min(len(b), maxBase64Prefix)], []byte(";base64,"))
		if i < 0 {
			return nil, fmt.Errorf("a data URL must be base64 (data:image/png;base64,…)")
		}
		b = b[i+len(";base64,"):]
	}
	clean := make([]byte, 0, len(b))
	urlSafe := false
	for i, c := range b {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			continue
		case c == '-' || c == '_':
			urlSafe = true
		case c == '=' || c == '+' || c == '/' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
		default:
			return nil, fmt.Errorf("not base64 either: byte %d is %q", i, c)
		}
		clean = append(clean, c)
	}
	clean = bytes.TrimRight(clean, "=")
	enc := base64.RawStdEncoding
	if urlSafe {
		enc = base64.RawURLEncoding
	}
	out := make([]byte, enc.DecodedLen(len(clean)))
	n, err := enc.Decode(out, clean)
	if err != nil {
		return nil, fmt.Errorf("not base64 either: %v", err)
	}
	return out[:n], nil
}
