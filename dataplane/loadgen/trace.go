package loadgen

// Trace files: the Twitter workload IPA replays (IPA.md §5.1) is one line of
// space-separated non-negative integers, requests per second, 1,899,061 of
// them. It ships as workload.tbz2 (a bzip2'd tar holding workload.txt); we
// read that, a bare .bz2 or .gz of the text, or the text itself, streaming,
// and keep only the window asked for.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTraceValue bounds one per-second count. The real trace peaks at 388;
// a value past this is a corrupt file, not a load anyone can send.
const maxTraceValue = 1 << 40

// ReadTrace reads a trace of per-second request counts (non-negative
// integers separated by any ASCII whitespace) from r and returns the values
// of seconds [start, end). end < 0 means to the end of the trace. It stops
// reading at end, and memory is bounded by the window, not the trace.
//
// An error names the value and byte offset at fault. A window that starts
// or ends past the trace's last second is an error that says how long the
// trace is.
func ReadTrace(r io.Reader, start, end int) ([]int, error) {
	if start < 0 {
		return nil, fmt.Errorf("trace window start %d is negative", start)
	}
	if end >= 0 && end <= start {
		return nil, fmt.Errorf("trace window [%d, %d) is empty; --end must be greater than --start", start, end)
	}
	var out []int
	if end >= 0 {
		out = make([]int, 0, min(end-start, 1<<20))
	}
	var (
		idx    int   // index of the value being read
		off    int64 // byte offset of buf[0]
		val    int
		digits int
		tokOff int64
		buf    = make([]byte, 64<<10)
	)
	flush := func() {
		if digits > 0 {
			if idx >= start {
				out = append(out, val)
			}
			idx++
			val, digits = 0, 0
		}
	}
	for end < 0 || idx < end {
		n, err := r.Read(buf)
		for i, c := range buf[:n] {
			switch {
			case c >= '0' && c <= '9':
				if digits == 0 {
					tokOff = off + int64(i)
				}
				digits++
				val = val*10 + int(c-'0')
				if val > maxTraceValue {
					return nil, fmt.Errorf("trace value %d (byte %d) exceeds %d requests per second; is this a trace file?", idx, tokOff, maxTraceValue)
				}
			case c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f':
				flush()
				if end >= 0 && idx >= end {
					return out, nil
				}
			default:
				return nil, fmt.Errorf("trace value %d (byte %d): %q is not part of a non-negative integer; a trace holds requests per second separated by spaces", idx, off+int64(i), rune(c))
			}
		}
		off += int64(n)
		if err == io.EOF {
			flush()
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read the trace at byte %d: %w", off, err)
		}
	}
	if idx <= start {
		return nil, fmt.Errorf("trace window starts at second %d but the trace has only %d seconds", start, idx)
	}
	if end >= 0 && idx < end {
		return nil, fmt.Errorf("trace window [%d, %d) ends past the trace, which has %d seconds", start, end, idx)
	}
	return out, nil
}

// twitterTrace is the Twitter trace as it ships (workload.tbz2, 1.3 MB),
// built into the binary so that every default works from a clone alone.
//
//go:embed twitter.tbz2
var twitterTrace []byte

// TwitterTrace names the built-in Twitter trace in OpenTrace, and is what
// an empty path means.
const TwitterTrace = "twitter"

// OpenTrace reads seconds [start, end) of the trace at path, which may be
// the text itself, a .bz2 or .gz of it, or a tar (optionally bzip2'd or
// gzipped, like workload.tbz2) holding it; the format is told from the
// content, not the name. In a tar the first regular file whose name ends in
// .txt is the trace. An empty path or TwitterTrace reads the built-in
// Twitter trace.
func OpenTrace(path string, start, end int) ([]int, error) {
	var src io.Reader
	if path == "" || path == TwitterTrace {
		path, src = "twitter (built in)", bytes.NewReader(twitterTrace)
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("cannot open trace: %w", err)
		}
		defer f.Close()
		src = f
	}
	r, err := traceReader(bufio.NewReaderSize(src, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	vals, err := ReadTrace(r, start, end)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return vals, nil
}

// traceReader unwraps compression and tar framing, told by magic numbers.
func traceReader(br *bufio.Reader) (io.Reader, error) {
	head, _ := br.Peek(3)
	var r io.Reader = br
	switch {
	case bytes.HasPrefix(head, []byte("BZh")):
		r = bufio.NewReaderSize(bzip2.NewReader(br), 64<<10)
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("cannot read gzip: %w", err)
		}
		r = bufio.NewReaderSize(zr, 64<<10)
	}
	inner := r.(*bufio.Reader)
	block, err := inner.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if len(block) < 512 || string(block[257:262]) != "ustar" {
		return inner, nil
	}
	tr := tar.NewReader(inner)
	var first string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read tar: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if strings.HasSuffix(h.Name, ".txt") {
			return bufio.NewReaderSize(tr, 64<<10), nil
		}
		if first == "" {
			// Keep looking for a .txt, but remember we could have used this.
			first = h.Name
		}
	}
	if first != "" {
		return nil, fmt.Errorf("tar holds no .txt file (first file: %s); extract the trace and pass the text file", first)
	}
	return nil, errors.New("tar holds no regular file")
}
