package main

import (
	"fmt"
	"io"

	"github.com/schollz/progressbar/v3"
)

// barProgress draws import's progress bar on a terminal: bytes of the
// input read against its size (a spinner when the size is unknown, as for
// a pipe), with the keys written so far.
type barProgress struct {
	bar *progressbar.ProgressBar
	w   io.Writer
}

func newBarProgress(w io.Writer, total int64) *barProgress {
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("importing"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(), // bytes read of the total
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000), // 100 ms between redraws
		progressbar.OptionSpinnerType(14),
		progressbar.OptionSetSpinnerChangeInterval(0), // no redraw goroutine of its own
	)
	return &barProgress{bar: bar, w: w}
}

func (p *barProgress) update(read int64, keys int) {
	p.bar.Describe(fmt.Sprintf("importing (%d keys)", keys))
	p.bar.Set64(read)
}

func (p *barProgress) finish() {
	p.bar.Exit()
	fmt.Fprintln(p.w)
}
