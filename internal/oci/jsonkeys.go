package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Manifests are read by many parsers (clients, scanners, other registries), and they must all
// see the same thing. encoding/json takes the last of duplicate keys and matches keys to fields
// without regard to case, while other parsers take the first, or only the exact name: a manifest
// with "layers" and then "LAYERS" would be checked by berth for the blobs of one list and pulled
// by clients from the other. checkKeys refuses such manifests: duplicate keys in any object, and
// keys that match a field berth reads only up to case.

// objectFields names the fields of one kind of object, and the kind of object each field holds
// (directly, or as the elements of an array).
type objectFields struct {
	names    []string
	children map[string]*objectFields
}

var descriptorFields = &objectFields{
	names: []string{"mediaType", "digest", "size", "urls", "artifactType", "annotations", "platform", "data"},
}

var manifestFields = &objectFields{
	names: []string{"schemaVersion", "mediaType", "artifactType", "config", "layers", "manifests", "subject", "annotations", "fsLayers"},
	children: map[string]*objectFields{
		"config": descriptorFields, "layers": descriptorFields, "manifests": descriptorFields, "subject": descriptorFields,
	},
}

// maxJSONDepth bounds nesting: a manifest has a few levels, and a parser of ours must not recurse
// as deep as 4 MiB of brackets.
const maxJSONDepth = 32

// checkKeys checks a manifest body for duplicate and case-variant keys.
func checkKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := checkValue(dec, manifestFields, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the manifest's JSON object")
	}
	return nil
}

func checkValue(dec *json.Decoder, fields *objectFields, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("nested more than %d levels deep", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			if seen[key] {
				return fmt.Errorf("key %q appears twice in one object", key)
			}
			seen[key] = true
			var sub *objectFields
			if fields != nil {
				for _, name := range fields.names {
					if key != name && strings.EqualFold(key, name) {
						return fmt.Errorf("key %q differs from the field %q only in case", key, name)
					}
				}
				sub = fields.children[key]
			}
			if err := checkValue(dec, sub, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
		return err
	case json.Delim('['):
		for dec.More() {
			if err := checkValue(dec, fields, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	return nil
}
