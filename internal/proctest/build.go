package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ModuleRoot returns the directory of the go.mod of the module the working
// directory is in: where raftexample's main package lives.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// Build compiles the main package in moduleDir to outDir/raftexample, with
// extra go build flags if given, and returns the binary's path.
func Build(ctx context.Context, moduleDir, outDir string, flags ...string) (string, error) {
	bin := filepath.Join(outDir, "raftexample")
	args := append(append([]string{"build"}, flags...), "-o", bin, ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = moduleDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", moduleDir, err, stderr.String())
	}
	return bin, nil
}

// Binary is raftexample built once for a test binary, on first use, so
// that tests which never start a process do not pay for the build. Call
// Remove from TestMain after m.Run.
type Binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Path builds the binary if no test has yet, and returns its path; it
// fails the test if the build failed.
func (b *Binary) Path(t TB) string {
	t.Helper()
	b.once.Do(b.build)
	if b.err != nil {
		t.Fatalf("build raftexample: %v", b.err)
	}
	return b.path
}

func (b *Binary) build() {
	ctx := context.Background()
	root, err := ModuleRoot(ctx)
	if err != nil {
		b.err = err
		return
	}
	if b.dir, err = os.MkdirTemp("", "raftexample-bin-"); err != nil {
		b.err = err
		return
	}
	b.path, b.err = Build(ctx, root, b.dir)
}

// Remove deletes the built binary, if any. No test may use it afterwards.
func (b *Binary) Remove() error {
	b.once.Do(func() {}) // nothing was built; and nothing will be now
	if b.dir == "" {
		return nil
	}
	return os.RemoveAll(b.dir)
}
