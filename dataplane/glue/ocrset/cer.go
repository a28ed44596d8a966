package ocrset

import "strings"

// EditDistance is the Levenshtein distance between a and b in runes: the
// fewest insertions, deletions and substitutions that turn a into b.
func EditDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) < len(rb) {
		ra, rb = rb, ra
	}
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			sub := prev[j-1]
			if ra[i-1] != rb[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// Score counts character errors against a reference. Scores add up, so the
// CER of a set is the sum of its pages' errors over the sum of their
// reference lengths (pages weigh by their length).
type Score struct {
	// Errors is the edit distance between what was read and the reference.
	Errors int `json:"errors"`
	// Chars is the reference's length in runes.
	Chars int `json:"chars"`
}

// Add returns s + o.
func (s Score) Add(o Score) Score { return Score{s.Errors + o.Errors, s.Chars + o.Chars} }

// CER is the character error rate Errors/Chars; it may exceed 1 when much
// more is read than there is. An empty reference has CER 0 if nothing was
// read (Errors 0), else 1.
func (s Score) CER() float64 {
	if s.Chars == 0 {
		return min(float64(s.Errors), 1)
	}
	return float64(s.Errors) / float64(s.Chars)
}

// Compare scores the lines read from a page against its reference lines.
// Both are joined by newlines, so a missing or extra line, a missing space
// and a wrong character each count; runs of spaces inside a read line count
// as one and lines are trimmed (layout, not text).
func Compare(got, want []string) Score {
	g := make([]string, len(got))
	for i, l := range got {
		g[i] = strings.Join(strings.Fields(l), " ")
	}
	w := strings.Join(want, "\n")
	return Score{Errors: EditDistance(strings.Join(g, "\n"), w), Chars: len([]rune(w))}
}
