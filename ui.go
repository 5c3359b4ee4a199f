package main

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// The dashboard (README, "The dashboard"): static files in ui/, embedded in
// the binary and served on the client port at /ui. The page talks only to
// the member that served it, through the /v1 API with relative URLs, so it
// works the same over TLS; it needs no build step and loads nothing from
// the network.

//go:embed ui
var uiEmbedded embed.FS

// uiFiles is the dashboard, read once: each file's body, type and ETag.
var uiFiles = loadUIFiles(uiEmbedded)

// uiFile is one file of the dashboard, ready to serve.
type uiFile struct {
	body        []byte
	contentType string
	etag        string // a hash of the body: it changes whenever the file does
}

// uiContentSecurityPolicy lets the page load scripts, styles, images and
// connections from its own origin only, never inline code, and never be
// framed by another site.
const uiContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// uiContentTypes are the types of the dashboard's files, by extension; a
// fixed table, so the answer does not depend on the host's mime.types.
var uiContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// loadUIFiles reads every file under ui/ in fsys, keyed by its path after
// /ui/. The embedded files are fixed at build time, so a failure here is a
// broken build and panics at start-up.
func loadUIFiles(fsys fs.FS) map[string]uiFile {
	files := map[string]uiFile{}
	err := fs.WalkDir(fsys, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ctype, ok := uiContentTypes[path.Ext(p)]
		if !ok {
			ctype = "text/plain; charset=utf-8" // such as a library's LICENSE
		}
		files[strings.TrimPrefix(p, "ui/")] = uiFile{body: body, contentType: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic("embedded dashboard: " + err.Error())
	}
	return files
}

// serveUI serves the dashboard: /ui and /ui/ are its page, /ui/NAME its
// other files. Every answer carries an ETag and asks the browser to
// revalidate (a 304 costs one round trip), so a new binary's files are
// never mixed with an old one's.
func serveUI(files map[string]uiFile) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/ui"), "/")
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok {
			http.Error(w, "no such dashboard file: "+r.URL.Path, http.StatusNotFound)
			return
		}
		hdr := w.Header()
		hdr.Set("Content-Type", f.contentType)
		hdr.Set("ETag", f.etag)
		hdr.Set("Cache-Control", "no-cache")
		hdr.Set("Content-Security-Policy", uiContentSecurityPolicy)
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		if inm := r.Header.Get("If-None-Match"); inm != "" && uiETagMatches(inm, f.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write(f.body)
	}
}

// uiETagMatches reports whether an If-None-Match header names etag.
func uiETagMatches(header, etag string) bool {
	for _, tag := range strings.Split(header, ",") {
		if tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/"); tag == "*" || tag == etag {
			return true
		}
	}
	return false
}
