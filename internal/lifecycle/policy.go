// Package lifecycle reads lifecycle policies in Amazon ECR's JSON grammar and decides which images
// of a repository they expire. It is pure: it reads no store and deletes nothing, so a preview and
// the sweep that follows it run the same code on the same inputs and reach the same decisions.
//
// The grammar, the validation rules and the evaluation follow ECR's documentation ("Lifecycle
// policy properties", "Lifecycle policy evaluation rules", "Examples of lifecycle policies"), with
// these differences, each refused or stated rather than silently changed:
//   - berth has no archive storage class, so ECR's archive constructs (action "transition",
//     "targetStorageClass", selection "storageClass": "archive", countType
//     "sinceImageTransitioned") are refused with an error that says so;
//   - ECR accepts countType "sinceImagePulled" only with the transition action; berth also accepts
//     it with "expire", and measures from the last pull, or from the push for an image never pulled;
//   - tag lists are refused with tagStatus "any" as well as "untagged" (ECR documents them only for
//     "tagged"), and a pattern or prefix that no tag could ever match (a space, a slash) is refused;
//   - an image that an index in the repository references is kept while that index is kept.
package lifecycle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// ECR's documented limits: a policy's text is at most 30,720 characters, and a policy has at most
// 50 rules; a tag pattern has at most four wildcards.
const (
	MaxPolicyBytes = 30720
	MaxRules       = 50
	MaxWildcards   = 4
	maxTagLen      = 128 // the distribution spec's longest tag
	archiveRefusal = "berth does not archive images (ECR's archive storage class has no counterpart in berth): only the expire action is supported"
	maxJSONNesting = 16
	maxInt         = math.MaxInt32 // ECR's integers are 32-bit
)

// TagStatus selects images by whether they carry tags.
type TagStatus string

// The three tag statuses of ECR's grammar.
const (
	Tagged   TagStatus = "tagged"
	Untagged TagStatus = "untagged"
	Any      TagStatus = "any"
)

// CountType is what a rule's countNumber counts.
type CountType string

// The count types berth evaluates. ECR's fourth, sinceImageTransitioned, belongs to archiving and is
// refused.
const (
	ImageCountMoreThan CountType = "imageCountMoreThan"
	SinceImagePushed   CountType = "sinceImagePushed"
	SinceImagePulled   CountType = "sinceImagePulled"
)

// Policy is a validated lifecycle policy: its rules in the order they apply, lowest rulePriority
// first.
type Policy struct {
	Rules []Rule
}

// Rule is one validated rule. Exactly one of TagPatterns and TagPrefixes is set when TagStatus is
// Tagged, and neither otherwise. CountNumber is an image count for ImageCountMoreThan and a number of
// days for the since types.
type Rule struct {
	Priority    int
	Description string
	TagStatus   TagStatus
	TagPatterns []string
	TagPrefixes []string
	CountType   CountType
	CountNumber int
}

// ErrInvalid is what every error of Parse wraps (errors.Is), so that a caller can answer a bad
// policy with a client error.
var ErrInvalid = errors.New("invalid lifecycle policy")

// Problem is one thing wrong with a policy. Rule is the rule's position in the "rules" array,
// counted from 1, or 0 for a problem of the whole policy; Field is the JSON path of what is wrong
// ("rules[2].selection.countUnit").
type Problem struct {
	Rule    int
	Field   string
	Message string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Message
	}
	return p.Field + ": " + p.Message
}

// ValidationError lists every problem Parse found, so that a policy is fixed in one round.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return ErrInvalid.Error() + ": " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// fields is the grammar's shape: the keys each object may hold, and the shape of the objects under
// them. Keys are matched exactly: encoding/json would match "RulePriority" to rulePriority and take
// the last of two "countNumber"s, where ECR refuses both.
type fields struct {
	names    []string
	children map[string]*fields
}

var (
	selectionFields = &fields{names: []string{"tagStatus", "tagPatternList", "tagPrefixList", "countType", "countUnit", "countNumber", "storageClass"}}
	actionFields    = &fields{names: []string{"type", "targetStorageClass"}}
	ruleFields      = &fields{names: []string{"rulePriority", "description", "selection", "action"},
		children: map[string]*fields{"selection": selectionFields, "action": actionFields}}
	policyFields = &fields{names: []string{"rules"}, children: map[string]*fields{"rules": ruleFields}}
)

// Parse reads and validates a policy in ECR's grammar. Every error it returns wraps ErrInvalid; a
// policy that is valid JSON but breaks ECR's rules yields a *ValidationError naming every problem.
func Parse(text []byte) (*Policy, error) {
	if len(text) > MaxPolicyBytes {
		return nil, &ValidationError{[]Problem{{Message: fmt.Sprintf("the policy is %d bytes; ECR allows at most %d", len(text), MaxPolicyBytes)}}}
	}
	var ps problems
	dec := json.NewDecoder(bytes.NewReader(text))
	if err := checkKeys(dec, policyFields, "", 0, &ps); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("the text ends before the JSON does")
		}
		return nil, fmt.Errorf("%w: not valid JSON (at byte %d): %v", ErrInvalid, dec.InputOffset(), err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the policy's JSON object", ErrInvalid)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(text, &top); err != nil || top == nil {
		return nil, fmt.Errorf(`%w: the policy must be a JSON object {"rules": [...]}`, ErrInvalid)
	}
	var raws []json.RawMessage
	switch r, ok := top["rules"]; {
	case !ok:
		ps.add(0, "rules", "required: a policy has at least one rule")
	case json.Unmarshal(r, &raws) != nil || isNull(r):
		ps.add(0, "rules", "must be an array of rules")
	case len(raws) == 0:
		ps.add(0, "rules", "a policy has at least one rule")
	case len(raws) > MaxRules:
		ps.add(0, "rules", "%d rules; ECR allows at most %d", len(raws), MaxRules)
	}
	p := &Policy{}
	for i, raw := range raws {
		p.Rules = append(p.Rules, parseRule(raw, i+1, &ps))
	}
	checkAcrossRules(p.Rules, &ps)
	if len(ps.list) > 0 {
		return nil, &ValidationError{ps.list}
	}
	slices.SortFunc(p.Rules, func(a, b Rule) int { return a.Priority - b.Priority })
	return p, nil
}

type problems struct{ list []Problem }

func (ps *problems) add(rule int, field, format string, args ...any) {
	ps.list = append(ps.list, Problem{Rule: rule, Field: field, Message: fmt.Sprintf(format, args...)})
}

// checkKeys walks one JSON value, refusing (as problems) keys the grammar does not have, keys that
// differ from one it has only in case, and keys given twice. It returns an error only for JSON that
// does not parse.
func checkKeys(dec *json.Decoder, f *fields, path string, depth int, ps *problems) error {
	if depth > maxJSONNesting {
		return fmt.Errorf("nested more than %d levels deep", maxJSONNesting)
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
			key := kt.(string)
			sub := path + "." + key
			if path == "" {
				sub = key
			}
			var child *fields
			if f != nil {
				switch {
				case seen[key]:
					ps.add(ruleOf(path), sub, "appears twice")
				case !slices.Contains(f.names, key):
					if i := slices.IndexFunc(f.names, func(n string) bool { return strings.EqualFold(n, key) }); i >= 0 {
						ps.add(ruleOf(path), sub, "unknown field (field names are case-sensitive: %q)", f.names[i])
					} else {
						ps.add(ruleOf(path), sub, "unknown field; this object has %s", strings.Join(f.names, ", "))
					}
				}
				child = f.children[key]
			}
			seen[key] = true
			if err := checkKeys(dec, child, sub, depth+1, ps); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := checkKeys(dec, f, fmt.Sprintf("%s[%d]", path, i+1), depth+1, ps); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	}
	return nil
}

// ruleOf is the rule number in a path "rules[N]...", or 0.
func ruleOf(path string) int {
	var n int
	if _, err := fmt.Sscanf(path, "rules[%d]", &n); err != nil {
		return 0
	}
	return n
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// object decodes raw as a JSON object, adding a problem if it is not one.
func object(raw json.RawMessage, rule int, field string, ps *problems) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		ps.add(rule, field, "must be a JSON object")
		return nil, false
	}
	return m, true
}

func str(m map[string]json.RawMessage, key string, rule int, path string, ps *problems) (string, bool) {
	raw, ok := m[key]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || isNull(raw) {
		ps.add(rule, path+"."+key, "must be a string")
		return "", false
	}
	return s, true
}

// integer reads a positive 32-bit integer: ECR refuses 0, negatives and fractions.
func integer(m map[string]json.RawMessage, key string, rule int, path string, ps *problems) (int, bool) {
	raw, ok := m[key]
	if !ok {
		return 0, false
	}
	// json.Number would also take a string holding a number ("1"), which ECR refuses.
	var n json.Number
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] == '"' || json.Unmarshal(t, &n) != nil || isNull(t) {
		ps.add(rule, path+"."+key, "must be an integer, not %s", raw)
		return 0, false
	}
	v, err := n.Int64()
	switch {
	case err != nil:
		ps.add(rule, path+"."+key, "must be a whole number, not %s", n)
	case v < 1 || v > maxInt:
		ps.add(rule, path+"."+key, "must be a positive integer up to %d, not %d", maxInt, v)
	default:
		return int(v), true
	}
	return 0, false
}

func strList(m map[string]json.RawMessage, key string, rule int, path string, ps *problems) ([]string, bool) {
	raw, ok := m[key]
	if !ok {
		return nil, false
	}
	var l []string
	if err := json.Unmarshal(raw, &l); err != nil || isNull(raw) {
		ps.add(rule, path+"."+key, "must be an array of strings")
		return nil, true
	}
	if len(l) == 0 {
		ps.add(rule, path+"."+key, "must not be empty")
	}
	return l, true
}

func parseRule(raw json.RawMessage, n int, ps *problems) Rule {
	var r Rule
	path := fmt.Sprintf("rules[%d]", n)
	m, ok := object(raw, n, path, ps)
	if !ok {
		return r
	}
	if v, ok := integer(m, "rulePriority", n, path, ps); ok {
		r.Priority = v
	} else if _, given := m["rulePriority"]; !given {
		ps.add(n, path+".rulePriority", "required")
	}
	r.Description, _ = str(m, "description", n, path, ps)

	if a, given := m["action"]; !given {
		ps.add(n, path+".action", `required: {"type": "expire"}`)
	} else if am, ok := object(a, n, path+".action", ps); ok {
		apath := path + ".action"
		switch t, ok := str(am, "type", n, apath, ps); {
		case !ok:
			if _, given := am["type"]; !given {
				ps.add(n, apath+".type", `required: "expire"`)
			}
		case t == "transition":
			ps.add(n, apath+".type", "%q: %s", t, archiveRefusal)
		case t != "expire":
			ps.add(n, apath+".type", `%q is not an action; the action is "expire"`, t)
		}
		if _, given := am["targetStorageClass"]; given {
			ps.add(n, apath+".targetStorageClass", archiveRefusal)
		}
	}

	s, given := m["selection"]
	if !given {
		ps.add(n, path+".selection", "required")
		return r
	}
	sm, ok := object(s, n, path+".selection", ps)
	if !ok {
		return r
	}
	parseSelection(&r, sm, n, path+".selection", ps)
	return r
}

func parseSelection(r *Rule, m map[string]json.RawMessage, n int, path string, ps *problems) {
	status, ok := str(m, "tagStatus", n, path, ps)
	switch {
	case !ok:
		if _, given := m["tagStatus"]; !given {
			ps.add(n, path+".tagStatus", `required: "tagged", "untagged" or "any"`)
		}
	case status == string(Tagged), status == string(Untagged), status == string(Any):
		r.TagStatus = TagStatus(status)
	default:
		ps.add(n, path+".tagStatus", `%q: must be "tagged", "untagged" or "any"`, status)
	}

	patterns, hasPatterns := strList(m, "tagPatternList", n, path, ps)
	prefixes, hasPrefixes := strList(m, "tagPrefixList", n, path, ps)
	for i, p := range patterns {
		field := fmt.Sprintf("%s.tagPatternList[%d]", path, i+1)
		if c := strings.Count(p, "*"); c > MaxWildcards {
			ps.add(n, field, "%q has %d wildcards; ECR allows at most %d", p, c, MaxWildcards)
		}
		checkTagText(p, true, n, field, ps)
	}
	for i, p := range prefixes {
		checkTagText(p, false, n, fmt.Sprintf("%s.tagPrefixList[%d]", path, i+1), ps)
	}
	switch {
	case hasPatterns && hasPrefixes:
		ps.add(n, path, "tagPatternList and tagPrefixList exclude each other: give one")
	case r.TagStatus == Tagged && !hasPatterns && !hasPrefixes:
		ps.add(n, path, `tagStatus "tagged" needs a tagPatternList or a tagPrefixList`)
	case r.TagStatus != Tagged && r.TagStatus != "" && (hasPatterns || hasPrefixes):
		ps.add(n, path, "tagStatus %q selects images regardless of their tags: omit tagPatternList and tagPrefixList", r.TagStatus)
	}
	r.TagPatterns, r.TagPrefixes = patterns, prefixes

	ct, ok := str(m, "countType", n, path, ps)
	switch {
	case !ok:
		if _, given := m["countType"]; !given {
			ps.add(n, path+".countType", `required: "imageCountMoreThan", "sinceImagePushed" or "sinceImagePulled"`)
		}
	case ct == "sinceImageTransitioned":
		ps.add(n, path+".countType", "%q: %s", ct, archiveRefusal)
	case ct == string(ImageCountMoreThan), ct == string(SinceImagePushed), ct == string(SinceImagePulled):
		r.CountType = CountType(ct)
	default:
		ps.add(n, path+".countType", `%q: must be "imageCountMoreThan", "sinceImagePushed" or "sinceImagePulled"`, ct)
	}

	unit, hasUnit := str(m, "countUnit", n, path, ps)
	_, unitGiven := m["countUnit"]
	switch r.CountType {
	case ImageCountMoreThan:
		if unitGiven {
			ps.add(n, path+".countUnit", "must be omitted with countType imageCountMoreThan (countUnit goes only with the since types)")
		}
	case SinceImagePushed, SinceImagePulled:
		switch {
		case !unitGiven:
			ps.add(n, path+".countUnit", `required with countType %s: "days"`, r.CountType)
		case hasUnit && unit != "days":
			ps.add(n, path+".countUnit", `%q: the only unit is "days"`, unit)
		}
	}

	if v, ok := integer(m, "countNumber", n, path, ps); ok {
		r.CountNumber = v
	} else if _, given := m["countNumber"]; !given {
		ps.add(n, path+".countNumber", "required: a positive integer")
	}

	switch sc, ok := str(m, "storageClass", n, path, ps); {
	case !ok:
	case sc == "archive":
		ps.add(n, path+".storageClass", "%q: %s", sc, archiveRefusal)
	case sc != "standard":
		// "standard" is every image berth has, so it selects what the rule would select without it.
		ps.add(n, path+".storageClass", `%q: the only storage class is "standard"`, sc)
	}
}

// checkTagText refuses list entries no tag could match: tags are [A-Za-z0-9_][A-Za-z0-9._-]*, at
// most 128 characters.
func checkTagText(s string, wildcards bool, n int, field string, ps *problems) {
	if s == "" {
		ps.add(n, field, "must not be empty")
		return
	}
	if len(strings.ReplaceAll(s, "*", "")) > maxTagLen {
		ps.add(n, field, "longer than a tag can be (%d characters)", maxTagLen)
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-' || wildcards && c == '*') {
			if c == '*' {
				ps.add(n, field, "%q: a tagPrefixList entry has no wildcards (use tagPatternList)", s)
			} else {
				ps.add(n, field, "%q: %q cannot appear in a tag", s, c)
			}
			return
		}
	}
}

// checkAcrossRules applies ECR's rules that relate rules to each other. A field with a problem of
// its own was left zero by parseRule, and is left out here, so one mistake is not reported twice.
func checkAcrossRules(rules []Rule, ps *problems) {
	byPriority := map[int]int{}
	maxPriority, anyRule, untaggedRule := 0, 0, 0
	lists := map[string]int{}
	for i, r := range rules {
		n := i + 1
		if r.Priority > 0 {
			if other, dup := byPriority[r.Priority]; dup {
				ps.add(n, fmt.Sprintf("rules[%d].rulePriority", n), "%d is also the priority of rules[%d]: priorities must be unique", r.Priority, other)
			} else {
				byPriority[r.Priority] = n
			}
			maxPriority = max(maxPriority, r.Priority)
		}
		switch r.TagStatus {
		case Any:
			if anyRule != 0 {
				ps.add(n, fmt.Sprintf("rules[%d].selection.tagStatus", n), `rules[%d] also has tagStatus "any": only one rule can, as it must come last`, anyRule)
			}
			anyRule = n
		case Untagged:
			if untaggedRule != 0 {
				ps.add(n, fmt.Sprintf("rules[%d].selection.tagStatus", n), `rules[%d] also selects untagged images: ECR allows only one rule to`, untaggedRule)
			}
			untaggedRule = n
		case Tagged:
			if len(r.TagPatterns)+len(r.TagPrefixes) == 0 {
				continue
			}
			// ECR: "the set of rules must contain a unique set of tag prefixes"; two rules on the
			// same tags would make the second dead, since the first claims every image it selects.
			key := "patterns " + strings.Join(slices.Sorted(slices.Values(r.TagPatterns)), "\x00")
			if r.TagPrefixes != nil {
				key = "prefixes " + strings.Join(slices.Sorted(slices.Values(r.TagPrefixes)), "\x00")
			}
			if other, dup := lists[key]; dup {
				ps.add(n, fmt.Sprintf("rules[%d].selection", n), "selects the same tags as rules[%d]: each rule needs its own set of tags", other)
			} else {
				lists[key] = n
			}
		}
	}
	if anyRule != 0 && rules[anyRule-1].Priority != 0 && rules[anyRule-1].Priority != maxPriority {
		ps.add(anyRule, fmt.Sprintf("rules[%d].rulePriority", anyRule), `a rule with tagStatus "any" must have the highest rulePriority (%d is lower than %d) so that it is evaluated last`, rules[anyRule-1].Priority, maxPriority)
	}
}
