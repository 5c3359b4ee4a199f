package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFailoverWhenFirstEndpointRefuses(t *testing.T) {
	kvs := newFakeKV()
	eps := "--endpoints=" + refusedURL(t) + "," + kvs.serve(t)
	kvctl(t, "", eps, "put", "k", "v").want(t, exitOK)
	r := kvctl(t, "", eps, "get", "k").want(t, exitOK)
	if r.stdout != "v" {
		t.Fatalf("get printed %q, want v", r.stdout)
	}
}

func TestFailoverWhenFirstEndpointAnswers503(t *testing.T) {
	kvs := newFakeKV()
	unavailable, hits := answering503(t, "no leader")
	eps := "--endpoints=" + unavailable + "," + kvs.serve(t)
	kvctl(t, "", eps, "put", "k", "v").want(t, exitOK)
	if got := kvs.snapshot()["k"]; string(got) != "v" {
		t.Fatalf("the second endpoint holds %q, want v", got)
	}
	if *hits != 1 {
		t.Fatalf("the 503 endpoint took %d requests, want 1", *hits)
	}
}

// A 503 that says a write may still apply leaves its outcome unknown: a
// conditional write must not be sent again elsewhere (it could fail its own
// condition), so kvctl reports it instead.
func TestNoFailoverWhenWriteMayHaveApplied(t *testing.T) {
	kvs := newFakeKV()
	unsure, _ := answering503(t, "lost the leader while waiting; the write may still apply")
	eps := "--endpoints=" + unsure + "," + kvs.serve(t)
	r := kvctl(t, "", eps, "put", "--if-none-match", "k", "v").want(t, exitError)
	if !strings.Contains(r.stderr, "may still apply") {
		t.Fatalf("stderr %q does not pass on the server's message", r.stderr)
	}
	if _, _, n := kvs.counts(); n != 0 {
		t.Fatalf("the second endpoint took %d requests, want none", n)
	}
	// A read is safe to repeat, so it moves on.
	kvctl(t, "", eps, "ls").want(t, exitOK)
}

func TestAllEndpointsDown(t *testing.T) {
	r := kvctl(t, "", "--endpoints="+refusedURL(t)+","+refusedURL(t), "get", "k").want(t, exitError)
	if !strings.Contains(r.stderr, "no endpoint answered") || strings.Count(r.stderr, "refused") != 2 {
		t.Fatalf("stderr %q should name both failures", r.stderr)
	}
}

func TestExitCodes(t *testing.T) {
	kvs := newFakeKV()
	eps := "--endpoints=" + kvs.serve(t)
	kvctl(t, "", eps, "put", "k", "v").want(t, exitOK)
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
	}{
		{"get", "", []string{"get", "k"}, exitOK},
		{"unknown command", "", []string{"frobnicate"}, exitUsage},
		{"unknown subcommand", "", []string{"member", "frobnicate"}, exitUsage},
		{"no command", "", []string{}, exitUsage},
		{"unknown flag", "", []string{"get", "--frobnicate", "k"}, exitUsage},
		{"missing argument", "", []string{"get"}, exitUsage},
		{"too many arguments", "", []string{"del", "a", "b"}, exitUsage},
		{"bad output format", "", []string{"-o", "yaml", "get", "k"}, exitUsage},
		{"bad endpoint", "", []string{"--endpoints", "127.0.0.1:1", "get", "k"}, exitUsage},
		{"bad revision", "", []string{"put", "--if-match", "x", "k", "v"}, exitUsage},
		{"two conditions", "", []string{"put", "--if-match", "1", "--if-none-match", "k", "v"}, exitUsage},
		{"bad member ID", "", []string{"member", "rm", "one"}, exitUsage},
		{"missing key", "", []string{"get", "nope"}, exitError},
		{"delete missing key", "", []string{"del", "nope"}, exitError},
		{"stale if-match", "", []string{"put", "--if-match", "1", "k", "w"}, exitPrecondition},
		{"if-none-match on an existing key", "", []string{"put", "--if-none-match", "k", "w"}, exitPrecondition},
		{"del if-match stale", "", []string{"del", "--if-match", "1", "k"}, exitPrecondition},
		{"txn condition", `[{"op":"put","key":"k","value":"x","ifAbsent":true}]`, []string{"txn"}, exitPrecondition},
		{"txn not JSON", `{`, []string{"txn"}, exitError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kvctl(t, tc.stdin, append([]string{eps}, tc.args...)...).want(t, tc.code)
			if tc.code != exitOK && !strings.HasPrefix(r.stderr, "kvctl: ") {
				t.Fatalf("stderr %q: want a kvctl: message", r.stderr)
			}
		})
	}
}

func TestGetOutputFormats(t *testing.T) {
	kvs := newFakeKV()
	eps := "--endpoints=" + kvs.serve(t)
	kvctl(t, "", eps, "put", "user/1", "ada").want(t, exitOK)
	kvctl(t, "\x00\xff", eps, "put", "user/2", "-").want(t, exitOK)

	if r := kvctl(t, "", eps, "get", "user/1"); r.stdout != "ada" {
		t.Errorf("get: %q, want the bare value", r.stdout)
	}
	if r := kvctl(t, "", eps, "get", "user/2"); r.stdout != "\x00\xff" {
		t.Errorf("get of bytes: %q", r.stdout)
	}
	if r := kvctl(t, "", eps, "get", "-o", "json", "user/2"); r.stdout != `{"key":"user/2","valueBase64":"AP8=","rev":3}`+"\n" {
		t.Errorf("get -o json: %q", r.stdout)
	}
	r := kvctl(t, "", eps, "get", "-o", "table", "user/1")
	if !strings.Contains(r.stdout, "| KEY    | REV | VALUE |") || !strings.Contains(r.stdout, "| user/1 |   2 | ada   |") {
		t.Errorf("get -o table:\n%s", r.stdout)
	}
	if r := kvctl(t, "", eps, "get", "--prefix", "user/"); r.stdout != "user/1\nada\nuser/2\n\x00\xff\n" {
		t.Errorf("get --prefix: %q", r.stdout)
	}
	r = kvctl(t, "", eps, "get", "--prefix", "-o", "table", "user/")
	if !strings.Contains(r.stdout, `"\x00\xff"`) {
		t.Errorf("a table shows bytes quoted:\n%s", r.stdout)
	}
}

func TestWriteOutputFormats(t *testing.T) {
	eps := "--endpoints=" + newFakeKV().serve(t)
	if r := kvctl(t, "", eps, "put", "a", "1"); r.stdout != "OK, revision 2\n" {
		t.Errorf("put: %q", r.stdout)
	}
	if r := kvctl(t, "", eps, "-o", "plain", "put", "a", "1"); r.stdout != "3\n" {
		t.Errorf("put -o plain: %q", r.stdout)
	}
	if r := kvctl(t, "", eps, "-o", "json", "put", "a", "1"); r.stdout != `{"key":"a","rev":4}`+"\n" {
		t.Errorf("put -o json: %q", r.stdout)
	}
	r := kvctl(t, `[{"op":"put","key":"b","value":"2"},{"op":"delete","key":"a"}]`, eps, "txn")
	if !strings.HasPrefix(r.stdout, "OK, revision 5\n") || !strings.Contains(r.stdout, "| 1 | delete | a   | true  |") {
		t.Errorf("txn:\n%s", r.stdout)
	}
	r = kvctl(t, `[{"op":"put","key":"b","value":"3","ifAbsent":true}]`, eps, "-o", "json", "txn").want(t, exitPrecondition)
	if !strings.Contains(r.stdout, `"failed":0`) {
		t.Errorf("txn -o json prints the server's 412 answer: %q", r.stdout)
	}
	if r := kvctl(t, "", eps, "del", "b"); r.stdout != "deleted b\n" {
		t.Errorf("del: %q", r.stdout)
	}
}

func TestLsOutputFormats(t *testing.T) {
	kvs := newFakeKV()
	eps := "--endpoints=" + kvs.serve(t)
	for _, k := range []string{"a/1", "a/2", "b/1"} {
		kvctl(t, "", eps, "put", k, "v").want(t, exitOK)
	}
	if r := kvctl(t, "", eps, "ls", "a/"); r.stdout != "a/1\na/2\n" {
		t.Errorf("ls a/: %q", r.stdout)
	}
	if r := kvctl(t, "", eps, "ls"); r.stdout != "a/1\na/2\nb/1\n" {
		t.Errorf("ls: %q", r.stdout)
	}
	r := kvctl(t, "", eps, "ls", "-o", "json", "a/")
	if r.stdout != `{"keys":[{"key":"a/1","rev":2},{"key":"a/2","rev":3}],"more":false,"rev":4}`+"\n" {
		t.Errorf("ls -o json: %q", r.stdout)
	}
	r = kvctl(t, "", eps, "ls", "-o", "table")
	if !strings.Contains(r.stdout, "| b/1 |   4 |") {
		t.Errorf("ls -o table:\n%s", r.stdout)
	}
}

// Listing goes page by page: 2500 keys take three pages of the server's 1000.
func TestLsPages(t *testing.T) {
	kvs := newFakeKV()
	for i := range 2500 {
		kvs.data[fmt.Sprintf("k%05d", i)] = fakeItem{value: []byte("v"), rev: 1}
	}
	r := kvctl(t, "", "--endpoints="+kvs.serve(t), "ls").want(t, exitOK)
	if lines := strings.Count(r.stdout, "\n"); lines != 2500 {
		t.Fatalf("ls printed %d keys, want 2500", lines)
	}
	if _, _, n := kvs.counts(); n != 3 {
		t.Fatalf("ls took %d requests, want 3 pages", n)
	}
}

func TestMemberOutputFormats(t *testing.T) {
	eps := "--endpoints=" + newFakeKV().serve(t)
	r := kvctl(t, "", eps, "member", "ls").want(t, exitOK)
	if !strings.Contains(r.stdout, "|  1 | http://127.0.0.1:1001 | voter   | *      |") ||
		!strings.Contains(r.stdout, "|  2 | http://127.0.0.1:1002 | learner |        |") {
		t.Errorf("member ls:\n%s", r.stdout)
	}
	r = kvctl(t, "", eps, "member", "ls", "-o", "plain")
	if r.stdout != "1 http://127.0.0.1:1001 voter leader\n2 http://127.0.0.1:1002 learner\n" {
		t.Errorf("member ls -o plain: %q", r.stdout)
	}
	r = kvctl(t, "", eps, "member", "ls", "-o", "json")
	if !json.Valid([]byte(r.stdout)) || !strings.HasPrefix(r.stdout, `{"members":[`) {
		t.Errorf("member ls -o json: %q", r.stdout)
	}
}

func TestStatusTable(t *testing.T) {
	kvs := newFakeKV()
	kvs.serve(t)
	down := refusedURL(t)
	r := kvctl(t, "", "--endpoints="+kvs.url+","+down, "status").want(t, exitError)
	rows := tableRows(r.stdout)
	want := [][]string{
		{"ID", "ENDPOINT", "PEER URL", "LEADER", "TERM", "RAFT STATE", "COMMIT", "APPLIED", "LAG", "KEYS", "STATE SIZE", "VERSION"},
		{"1", kvs.url, "http://127.0.0.1:1001", "*", "3", "StateLeader", "1", "1", "0", "0", "2.0 KiB", "test"},
		{"-", down, "unreachable: dial tcp " + strings.TrimPrefix(down, "http://") + ": connect: connection refused"},
	}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Errorf("status table:\n%s\nrows %q\nwant %q", r.stdout, rows, want)
	}
	if !strings.Contains(r.stderr, "1 of 2 endpoints did not answer") {
		t.Errorf("stderr: %q", r.stderr)
	}
	r = kvctl(t, "", "--endpoints="+kvs.url+","+down, "status", "-o", "json")
	var answers []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &answers); err != nil || len(answers) != 2 || answers[0]["status"] == nil || answers[1]["error"] == nil {
		t.Errorf("status -o json: %q (%v)", r.stdout, err)
	}
}

// binaryRecords are keys and values that JSON cannot carry as text, or
// that a careless encoder would change.
var binaryRecords = map[string][]byte{
	"text":               []byte("hello"),
	"empty":              {},
	"newline":            []byte("a\nb\r\n"),
	"bytes":              {0, 0xff, 0xfe, 1, '\n'},
	"html":               []byte("<a href='x'>&amp;</a>"),
	"unicode ü 日本":       []byte("ü 日本 \u2028"),
	"key\xffnot-utf8":    []byte("v"),
	"sp ace/?q=1#f%20..": []byte("\x00"),
	"dir/../x":           []byte("dots"),
}

func TestExportImportRoundTrip(t *testing.T) {
	src := newFakeKV()
	for k, v := range binaryRecords {
		kvctl(t, string(v), "--endpoints="+src.serve(t), "put", k, "-").want(t, exitOK)
	}
	if got := src.snapshot(); !maps.EqualFunc(got, binaryRecords, bytes.Equal) {
		t.Fatalf("put did not store the bytes as given: %q", got)
	}
	exported := kvctl(t, "", "--endpoints="+src.serve(t), "export").want(t, exitOK).stdout
	if n := strings.Count(exported, "\n"); n != len(binaryRecords) {
		t.Fatalf("export wrote %d lines, want %d:\n%s", n, len(binaryRecords), exported)
	}

	dst := newFakeKV()
	file := filepath.Join(t.TempDir(), "dump.ndjson")
	if err := os.WriteFile(file, []byte(exported), 0o600); err != nil {
		t.Fatal(err)
	}
	r := kvctl(t, "", "--endpoints="+dst.serve(t), "import", file).want(t, exitOK)
	if got := dst.snapshot(); !maps.EqualFunc(got, binaryRecords, bytes.Equal) {
		t.Fatalf("import restored %q, want %q", got, binaryRecords)
	}
	txns, puts, _ := dst.counts()
	// Text goes in one transaction; the two non-UTF-8 records alone.
	if txns < 1 || puts != 2 {
		t.Errorf("import sent %d txns and %d puts, want the text batched and two non-UTF-8 puts", txns, puts)
	}
	if r.stdout != fmt.Sprintf("imported %d keys in %d requests\n", len(binaryRecords), txns+puts) {
		t.Errorf("import summary: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("import: %d keys", len(binaryRecords))) || strings.Count(r.stderr, "(100%)") != 1 {
		t.Errorf("plain progress lines on a non-terminal: %q", r.stderr)
	}
	// Exported again, the copy reads the same.
	if again := kvctl(t, "", "--endpoints="+dst.serve(t), "export").stdout; again != exported {
		t.Errorf("export of the import differs:\n%s\nwant\n%s", again, exported)
	}
}

// importRecords makes NDJSON of n records whose puts, batched together,
// make a txn body of exactly size bytes.
func importRecords(t *testing.T, n, size int) string {
	t.Helper()
	var lines []string
	ops := make([][]byte, n)
	for i := range ops {
		op, err := encodeOp(fmt.Sprintf("k%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		ops[i] = op
	}
	pad := size - len(txnBody(ops)) // bytes of value to spread over the records
	for i := range n {
		v := strings.Repeat("x", pad/n+boolInt(i < pad%n))
		lines = append(lines, fmt.Sprintf(`{"key":"k%d","value":"%s"}`, i, v))
	}
	return strings.Join(lines, "\n") + "\n"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestImportBatchesAtTheSizeBound(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bodySize int
		txns     int
	}{
		{"just under", defaultBatchBytes - 1, 1},
		{"at the bound", defaultBatchBytes, 1},
		{"just over", defaultBatchBytes + 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kvs := newFakeKV()
			r := kvctl(t, importRecords(t, 4, tc.bodySize), "--endpoints="+kvs.serve(t), "import").want(t, exitOK)
			txns, puts, _ := kvs.counts()
			if txns != tc.txns || puts != 0 {
				t.Fatalf("%d txns and %d puts, want %d txns", txns, puts, tc.txns)
			}
			total := 0
			for _, body := range kvs.txns {
				if len(body) > defaultBatchBytes {
					t.Errorf("a txn body of %d bytes, over %d", len(body), defaultBatchBytes)
				}
				total += len(body)
			}
			if tc.txns == 1 && total != tc.bodySize {
				t.Errorf("the txn body is %d bytes, want %d", total, tc.bodySize)
			}
			if len(kvs.snapshot()) != 4 || !strings.Contains(r.stdout, "imported 4 keys") {
				t.Errorf("not every key imported: %q", r.stdout)
			}
		})
	}
}

// A record larger than a batch goes alone as a PUT, which carries the
// bytes without JSON's escaping.
func TestImportLargeRecordAlone(t *testing.T) {
	kvs := newFakeKV()
	big := strings.Repeat("y", 300)
	in := `{"key":"a","value":"1"}` + "\n" + `{"key":"big","value":"` + big + `"}` + "\n" + `{"key":"b","value":"2"}`
	kvctl(t, in, "--endpoints="+kvs.serve(t), "import", "--batch-bytes", "200").want(t, exitOK)
	txns, puts, _ := kvs.counts()
	if txns != 2 || puts != 1 || string(kvs.snapshot()["big"]) != big {
		t.Fatalf("%d txns, %d puts, want 2 and 1", txns, puts)
	}
}

func TestImportBadInput(t *testing.T) {
	eps := "--endpoints=" + newFakeKV().serve(t)
	for in, want := range map[string]string{
		"{\"key\":\"a\",\"value\":\"1\"}\nnot json\n": "line 2: not a JSON object",
		`{"value":"1"}`: "line 1: no key",
		`{"key":"a"}`:   `line 1: key "a" has no value`,
		`{"key":"a","keyBase64":"YQ==","value":"1"}`: "both key and keyBase64",
	} {
		r := kvctl(t, in, eps, "import").want(t, exitError)
		if !strings.Contains(r.stderr, want) {
			t.Errorf("import of %q: stderr %q, want %q", in, r.stderr, want)
		}
	}
}

func TestKeyPathReachesServerUnchanged(t *testing.T) {
	kvs := newFakeKV()
	eps := "--endpoints=" + kvs.serve(t)
	for key := range binaryRecords {
		kvctl(t, "", eps, "put", key, "v").want(t, exitOK)
		if _, ok := kvs.snapshot()[key]; !ok {
			t.Errorf("put %q: the server got another key: %q", key, slicesKeys(kvs.snapshot()))
		}
		kvctl(t, "", eps, "del", key).want(t, exitOK)
	}
}

func slicesKeys(m map[string][]byte) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// tableRows reads the cells of a table's rows, without its borders.
func tableRows(table string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	return rows
}

// On a terminal, import draws a bar: bytes read against the input's size,
// and the keys written so far.
func TestImportProgressBar(t *testing.T) {
	var buf bytes.Buffer
	bar := newBarProgress(&buf, 2048)
	bar.update(1024, 10)
	bar.update(2048, 20)
	bar.finish()
	out := buf.String()
	for _, want := range []string{"importing (20 keys)", "100%", "2.0 KiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("the bar lacks %q: %q", want, out)
		}
	}
}
