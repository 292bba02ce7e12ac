package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

var (
	durationType = reflect.TypeFor[Duration]()
	rawType      = reflect.TypeFor[json.RawMessage]()
)

// checkStrict rejects what encoding/json would let through in plugin.json: a
// document that is not one JSON object, data after it, unknown or duplicate
// keys, keys that match a field only when case is ignored, and durations that
// do not parse. Values of the wrong type are left to json.Unmarshal. The
// config object is not looked into: it belongs to the plugin.
func checkStrict(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return syntaxError(data, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return tokenError(err)
	}
	if tok != json.Delim('{') {
		return manifestError(nil, ManifestFile+" must hold one JSON object, {...}")
	}
	if err := walkObject(dec, reflect.TypeFor[Manifest](), ""); err != nil {
		return err
	}
	return nil
}

// walkObject checks the keys of an object whose '{' has been read, and the
// values below them, up to and including its '}'.
func walkObject(dec *json.Decoder, t reflect.Type, path string) error {
	fields := jsonFields(t)
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return tokenError(err)
		}
		key, _ := tok.(string)
		full := joinPath(path, key)
		if seen[key] {
			return manifestError(nil, fmt.Sprintf("%s: field %q appears twice: keep one", ManifestFile, full))
		}
		seen[key] = true
		ft, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("%s: unknown field %q", ManifestFile, full)
			for name := range fields {
				if strings.EqualFold(name, key) {
					msg += fmt.Sprintf(": did you mean %q?", joinPath(path, name))
				}
			}
			return manifestError(nil, msg)
		}
		if err := walkValue(dec, ft, full); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return tokenError(err)
	}
	return nil
}

// walkValue checks the next value, which will be decoded into a t.
func walkValue(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return tokenError(err)
	}
	switch {
	case t == durationType:
		s, ok := tok.(string)
		if !ok {
			if d, isDelim := tok.(json.Delim); isDelim {
				tok = string(d) + "..."
			}
			return manifestError(nil, fmt.Sprintf("%s: %s: want a duration string such as \"2s\", got %v", ManifestFile, path, tok))
		}
		if _, err := parseDuration(s); err != nil {
			return manifestError(nil, fmt.Sprintf("%s: %s: %v", ManifestFile, path, err))
		}
		return nil
	case tok == json.Delim('{') && t.Kind() == reflect.Struct:
		return walkObject(dec, t, path)
	case tok == json.Delim('{') || tok == json.Delim('['):
		return skip(dec)
	}
	return nil
}

// skip reads the rest of an object or array whose opening delimiter has been
// read.
func skip(dec *json.Decoder) error {
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return tokenError(err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// jsonFields maps the JSON names of t's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type)
	if t.Kind() != reflect.Struct || t == rawType {
		return fields
	}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		fields[name] = f.Type
	}
	return fields
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// syntaxError reports why data is not one JSON value, with the line and
// column of the mistake.
func syntaxError(data []byte, err error) error {
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return decodeError(err)
	}
	var msg string
	switch before := data[:max(se.Offset-1, 0)]; {
	case json.Valid(before):
		msg = ManifestFile + ": unexpected data after the JSON object: remove it"
	case se.Offset >= int64(len(data)):
		msg = ManifestFile + ": the JSON ends too early: close every { and ["
	default:
		line := 1 + bytes.Count(before, []byte("\n"))
		col := len(before) - bytes.LastIndexByte(before, '\n')
		msg = fmt.Sprintf("%s: invalid JSON: %v (line %d, column %d)", ManifestFile, se, line, col)
	}
	e := manifestError(nil, msg)
	e.cause = err
	return e
}

// tokenError reports an error of the token walk, which runs only on valid
// JSON and so should not fail.
func tokenError(err error) error {
	e := manifestError(nil, fmt.Sprintf("%s: invalid JSON: %v", ManifestFile, err))
	e.cause = err
	return e
}
