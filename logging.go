package main

import (
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newLogger returns the member's logger: console lines at level and above.
func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeCaller = callerEncoder()
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), lvl)
	return zap.New(core, zap.AddCaller()), nil
}

// callerEncoder names this program's files "raftexample/raft.go:12",
// whatever the folder it was built in, and other packages' files as zap
// does ("wal/wal.go:345").
func callerEncoder() zapcore.CallerEncoder {
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Dir(self) + string(filepath.Separator)
	return func(c zapcore.EntryCaller, enc zapcore.PrimitiveArrayEncoder) {
		if rest, ok := strings.CutPrefix(c.File, dir); ok && c.Defined {
			enc.AppendString("raftexample/" + filepath.ToSlash(rest) + ":" + strconv.Itoa(c.Line))
			return
		}
		zapcore.ShortCallerEncoder(c, enc)
	}
}

// libLogger is the logger handed to raft and etcd's packages (rafthttp,
// WAL, snapshots, purging). Their info lines (every stream opened, every
// configuration switch, every append that raft's unstable log has moved
// past) go to debug: at the default level a member logs what it does, not
// how the libraries do it. Their warnings and errors pass unchanged.
func libLogger(l *zap.Logger) *zap.Logger {
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return demoteInfo{c} }))
}

// demoteInfo is a core that logs info entries as debug, and the warnings
// this program's design makes routine.
type demoteInfo struct{ zapcore.Core }

// routineWarning holds library warnings that say nothing is wrong here: the
// snapshotter warns about every file of its directory that is not a .snap,
// at every start, and the .snap.db state files live there by design.
var routineWarning = map[string]bool{
	"found unexpected non-snap file; skipping": true,
}

func (c demoteInfo) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Level == zapcore.InfoLevel || e.Level == zapcore.WarnLevel && routineWarning[e.Message] {
		e.Level = zapcore.DebugLevel
	}
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c demoteInfo) With(fields []zapcore.Field) zapcore.Core { return demoteInfo{c.Core.With(fields)} }
