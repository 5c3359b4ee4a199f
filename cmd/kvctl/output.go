package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/jedib0t/go-pretty/v6/table"
)

// kv is a key and value in the API's JSON encoding (docs/API.md, "JSON
// carries UTF-8"): text as "key"/"value", other bytes base64-encoded as
// "keyBase64"/"valueBase64". export writes it and import reads it, so a
// round trip keeps every byte.
type kv struct {
	Key         *string `json:"key,omitempty"`
	KeyBase64   []byte  `json:"keyBase64,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 []byte  `json:"valueBase64,omitempty"`
	Rev         uint64  `json:"rev,omitempty"`
}

func newKV(key string, value []byte, rev uint64) kv {
	var e kv
	if utf8.ValidString(key) {
		e.Key = &key
	} else {
		e.KeyBase64 = []byte(key)
	}
	if utf8.Valid(value) {
		v := string(value)
		e.Value = &v
	} else {
		e.ValueBase64 = value
	}
	e.Rev = rev
	return e
}

// decoded returns the key and value bytes; hasValue is false when neither
// value field is present.
func (e kv) decoded() (key string, value []byte, hasValue bool, err error) {
	switch {
	case e.Key != nil && e.KeyBase64 != nil:
		return "", nil, false, fmt.Errorf("both key and keyBase64")
	case e.Key != nil:
		key = *e.Key
	case e.KeyBase64 != nil:
		key = string(e.KeyBase64)
	}
	switch {
	case e.Value != nil && e.ValueBase64 != nil:
		return "", nil, false, fmt.Errorf("both value and valueBase64")
	case e.Value != nil:
		return key, []byte(*e.Value), true, nil
	case e.ValueBase64 != nil:
		return key, e.ValueBase64, true, nil
	}
	return key, nil, false, nil
}

// writeJSONLine writes v as one line of compact JSON, without escaping
// <, > and & (nothing here is embedded in HTML).
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeRaw writes a server's JSON answer as it came, ending in a newline.
func writeRaw(w io.Writer, body []byte) error {
	if _, err := w.Write(body); err != nil {
		return err
	}
	if len(body) == 0 || body[len(body)-1] != '\n' {
		_, err := io.WriteString(w, "\n")
		return err
	}
	return nil
}

// printable shows bytes in a table cell: as text when they are printable
// UTF-8, else Go-quoted so control bytes cannot garble the terminal.
func printable(b string) string {
	if !utf8.ValidString(b) {
		return strconv.Quote(b)
	}
	for _, r := range b {
		if !unicode.IsPrint(r) && r != ' ' {
			return strconv.Quote(b)
		}
	}
	return b
}

// newTable starts a table written to w when rendered.
func newTable(w io.Writer, header ...any) table.Writer {
	t := table.NewWriter()
	t.SetOutputMirror(w)
	t.AppendHeader(header)
	return t
}
