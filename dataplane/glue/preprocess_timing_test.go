package glue

import (
	"os"
	"testing"
)

// BenchmarkClassifyPagePreprocessing is the router's per-request work for
// the classify pipeline on the README's page: decode, then resize and
// normalise (it runs on the router's cores, outside any stage's profile).
func BenchmarkClassifyPagePreprocessing(b *testing.B) {
	page, err := os.ReadFile("../../docs/sample-page.png")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeImage(page); err != nil {
				b.Fatal(err)
			}
		}
	})
	img, _ := DecodeImage(page)
	b.Run("classify-input", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ClassifyInput(img, "data", 224)
		}
	})
}
