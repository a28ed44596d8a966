package glue

import (
	"bytes"
	"encoding/base64"
	"image/color"
	"strings"
	"testing"
)

// Base64 in every common spelling decodes to the same pixels as the raw
// bytes; data that is neither says so.
func TestDecodeImageDataAcceptsBase64(t *testing.T) {
	for _, raw := range [][]byte{encodePNG(t, pattern(20, 10)), encodeJPEG(t, pattern(20, 10))} {
		want, err := DecodeImageData(raw)
		if err != nil {
			t.Fatal(err)
		}
		std := base64.StdEncoding.EncodeToString(raw)
		for name, enc := range map[string]string{
			"standard":          std,
			"standard unpadded": base64.RawStdEncoding.EncodeToString(raw),
			"URL-safe":          base64.URLEncoding.EncodeToString(raw),
			"URL-safe unpadded": base64.RawURLEncoding.EncodeToString(raw),
			"MIME line breaks":  std[:76] + "\r\n" + std[76:],
			"data URL":          "data:image/png;base64," + std,
		} {
			got, err := DecodeImageData([]byte(enc))
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if d := meanDiff(got, want); d != 0 {
				t.Errorf("%s: pixels differ by %g", name, d)
			}
		}
	}
	for in, want := range map[string]string{
		"hello, world":     "not base64 either",
		"aGVsbG8gd29ybGQ=": "decodes to bytes starting with \"hello wo\"",
		"data:text/plain,": "data URL",
		"iVBORw0K":         "truncated",
	} {
		_, err := DecodeImageData([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error containing %q", in, err, want)
		}
	}
}

// FuzzDecodeImageData: no input panics, and every error is classified, as
// for DecodeImage; base64 of an image decodes to the same bounds as the
// image.
func FuzzDecodeImageData(f *testing.F) {
	png := encodePNG(f, solid(3, 2, color.RGBA{1, 2, 3, 255}))
	f.Add(png)
	f.Add([]byte(base64.StdEncoding.EncodeToString(png)))
	f.Add([]byte(base64.RawURLEncoding.EncodeToString(encodeJPEG(f, solid(9, 9, color.RGBA{1, 2, 3, 255})))))
	f.Add([]byte("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)))
	f.Add([]byte("iVBORw0KGgo="))
	f.Add([]byte("/9j/"))
	const limit = 1_000_000
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return
		}
		img, err := decodeImageData(b, limit)
		if !checkDecoded(t, img, err, limit) {
			return
		}
		if !bytes.HasPrefix(b, pngMagic) && !bytes.HasPrefix(b, jpegMagic) {
			return // b was base64 itself
		}
		again, err := decodeImageData([]byte(base64.StdEncoding.EncodeToString(b)), limit)
		if err != nil || again.Bounds() != img.Bounds() {
			t.Fatalf("base64 of a decodable input: %v, %v", again, err)
		}
	})
}
