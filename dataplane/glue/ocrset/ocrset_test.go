package ocrset

import (
	"bytes"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := Generate(7, 6)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(7, 6)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if !bytes.Equal(a[i].Image, b[i].Image) || !slices.Equal(a[i].Lines, b[i].Lines) {
			t.Fatalf("%s differs between two runs of seed 7", a[i].Name)
		}
	}
	// Page i does not depend on how many pages are made.
	p, err := GeneratePage(7, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Image, a[4].Image) {
		t.Fatal("GeneratePage(7, 4) differs from Generate(7, 6)[4]")
	}
	c, err := Generate(8, 6)
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for i := range a {
		if bytes.Equal(a[i].Image, c[i].Image) {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("%d pages of seeds 7 and 8 are identical", same)
	}
}

// TestGenerateGolden pins the labels of seed 1 (the committed fixture
// testdata/seed1.txt): a change of the generator that changes the set must
// bump Version and regenerate the file (go test -run Golden -update).
func TestGenerateGolden(t *testing.T) {
	pages, err := Generate(1, 4)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, p := range pages {
		b.WriteString(p.Name + " " + p.Font + "\n" + p.Text() + "\n\n")
	}
	path := filepath.Join("testdata", "seed1.txt")
	if os.Getenv("OCRSET_UPDATE") != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Fatalf("labels of seed 1 changed (bump Version, then OCRSET_UPDATE=1 go test -run Golden):\n%s", b.String())
	}
}

// TestGenerateVaries checks that a set covers what the generator promises:
// several fonts, sizes, inverted and skewed pages, PNG and JPEG, and that
// every image decodes to its recorded size with light-on-dark pixels where
// it says inverted.
func TestGenerateVaries(t *testing.T) {
	pages, err := Generate(1, 40)
	if err != nil {
		t.Fatal(err)
	}
	fonts, sizes := map[string]bool{}, map[float64]bool{}
	var inverted, skewed, jpegs, short, long int
	for _, p := range pages {
		fonts[p.Font], sizes[p.SizePx] = true, true
		if p.Inverted {
			inverted++
		}
		if p.SkewDeg != 0 {
			skewed++
			if p.SkewDeg < -0.8 || p.SkewDeg > 0.8 {
				t.Errorf("%s: skew %v° is not slight", p.Name, p.SkewDeg)
			}
		}
		if p.JPEGQuality > 0 {
			jpegs++
		}
		for _, l := range p.Lines {
			if n := len(strings.Fields(l)); n == 1 {
				short++
			} else if n >= 8 {
				long++
			}
		}
		img, format, err := image.Decode(bytes.NewReader(p.Image))
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		if (format == "jpeg") != (p.JPEGQuality > 0) || img.Bounds().Dx() != p.Width || img.Bounds().Dy() != p.Height {
			t.Errorf("%s: decoded %s %v; recorded quality %d, %d×%d", p.Name, format, img.Bounds(), p.JPEGQuality, p.Width, p.Height)
		}
		r, _, _, _ := img.At(1, 1).RGBA()
		if dark := r < 0x8000; dark != p.Inverted {
			t.Errorf("%s: corner pixel %#x, inverted %v", p.Name, r, p.Inverted)
		}
	}
	if len(fonts) < 6 || len(sizes) < 8 || inverted < 4 || skewed < 10 || jpegs < 10 || jpegs == len(pages) || short == 0 || long == 0 {
		t.Errorf("40 pages: %d fonts, %d sizes, %d inverted, %d skewed, %d JPEG, %d one-word and %d long lines: not varied enough",
			len(fonts), len(sizes), inverted, skewed, jpegs, short, long)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
		{"flaw", "lawn", 2},
		{"HIGH VOLTAGE", "HIGHVOLTAGE", 1},
		{"naïve", "naive", 1}, // runes, not bytes
		{"日本語", "日本", 1},
		{"abc", "abc", 0},
		{"ab", "ba", 2}, // no transpositions
	} {
		if got := EditDistance(c.a, c.b); got != c.want {
			t.Errorf("EditDistance(%q, %q) = %d; want %d", c.a, c.b, got, c.want)
		}
		if got := EditDistance(c.b, c.a); got != c.want {
			t.Errorf("EditDistance(%q, %q) = %d; want %d (symmetric)", c.b, c.a, got, c.want)
		}
	}
}

func TestCompareAndCER(t *testing.T) {
	want := []string{"WARNING: HIGH VOLTAGE", "authorized personnel only"}
	chars := len("WARNING: HIGH VOLTAGE\nauthorized personnel only")
	for _, c := range []struct {
		name string
		got  []string
		errs int
	}{
		{"exact", want, 0},
		{"layout spaces ignored", []string{" WARNING:  HIGH VOLTAGE ", "authorized personnel only"}, 0},
		{"spaces lost", []string{"WARNING:HIGHVOLTAGE", "authorizedpersonnelonly"}, 4},
		{"line missing", []string{"WARNING: HIGH VOLTAGE"}, 1 + len("authorized personnel only")},
		{"nothing read", nil, chars},
		{"one substitution", []string{"WARNING: HIGH V0LTAGE", "authorized personnel only"}, 1},
	} {
		s := Compare(c.got, want)
		if s.Errors != c.errs || s.Chars != chars {
			t.Errorf("%s: %+v; want %d errors over %d chars", c.name, s, c.errs, chars)
		}
		if got := s.CER(); got != float64(c.errs)/float64(chars) {
			t.Errorf("%s: CER %v", c.name, got)
		}
	}
	total := Score{2, 100}.Add(Score{0, 300})
	if total != (Score{2, 400}) || total.CER() != 0.005 {
		t.Errorf("sum %+v CER %v; want 2/400", total, total.CER())
	}
	if (Score{}).CER() != 0 || (Score{Errors: 3}).CER() != 1 {
		t.Error("empty reference: CER 0 when nothing read, 1 otherwise")
	}
}

func TestWriteDir(t *testing.T) {
	pages, err := Generate(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteDir(dir, pages); err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		b, err := os.ReadFile(filepath.Join(dir, p.Name+p.Ext()))
		if err != nil || !bytes.Equal(b, p.Image) {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "labels.json")); err != nil || !bytes.Contains(b, []byte(pages[0].Lines[0])) {
		t.Fatalf("labels.json: %v", err)
	}
}
