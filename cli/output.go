package cli

import (
	"encoding/json"
	"io"
)

// Output formats.
const (
	outputText = "text"
	outputJSON = "json"
)

// render writes v as indented JSON, or text() for humans.
func render(w io.Writer, format string, v any, text func() string) error {
	if format == outputJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := io.WriteString(w, text())
	return err
}
