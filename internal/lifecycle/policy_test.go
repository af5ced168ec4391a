package lifecycle_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/berth/berth/internal/lifecycle"
)

// rule writes one rule with the given selection and action members.
func rule(priority int, selection, action string) string {
	return fmt.Sprintf(`{"rulePriority": %d, "selection": {%s}, "action": {%s}}`, priority, selection, action)
}

const (
	expire     = `"type": "expire"`
	countOne   = `"countType": "imageCountMoreThan", "countNumber": 1`
	since14    = `"countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14`
	untagged   = `"tagStatus": "untagged", `
	prodPrefix = `"tagStatus": "tagged", "tagPrefixList": ["prod"], `
)

func policy(rules ...string) string { return `{"rules": [` + strings.Join(rules, ", ") + `]}` }

func TestParseValid(t *testing.T) {
	p := mustParse(t, policy(
		rule(30, `"tagStatus": "any", `+since14, expire),
		rule(10, `"tagStatus": "tagged", "tagPatternList": ["*test*1*2*3", "test*1*2*3*"], `+countOne, expire),
		rule(20, untagged+`"countType": "sinceImagePulled", "countUnit": "days", "countNumber": 90, "storageClass": "standard"`, expire),
	))
	want := []lifecycle.Rule{
		{Priority: 10, TagStatus: lifecycle.Tagged, TagPatterns: []string{"*test*1*2*3", "test*1*2*3*"}, CountType: lifecycle.ImageCountMoreThan, CountNumber: 1},
		{Priority: 20, TagStatus: lifecycle.Untagged, CountType: lifecycle.SinceImagePulled, CountNumber: 90},
		{Priority: 30, TagStatus: lifecycle.Any, CountType: lifecycle.SinceImagePushed, CountNumber: 14},
	}
	if fmt.Sprint(p.Rules) != fmt.Sprint(want) {
		t.Errorf("rules\n%+v\nwant\n%+v", p.Rules, want)
	}
	// A description is optional and kept.
	p = mustParse(t, `{"rules": [{"rulePriority": 1, "description": "keep one", "selection": {`+untagged+countOne+`}, "action": {"type": "expire"}}]}`)
	if p.Rules[0].Description != "keep one" {
		t.Errorf("description %q", p.Rules[0].Description)
	}
}

// TestParseInvalid: every validation rule, each with the field it names and words of its message.
func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, text, field, says string
	}{
		{"not json", `{"rules": [`, "", "not valid JSON (at byte 11): the text ends before the JSON does"},
		{"bad json", `{"rules": [x]}`, "", "not valid JSON (at byte 11): invalid character"},
		{"not an object", `[1]`, "", "JSON object"},
		{"null", `null`, "", "JSON object"},
		{"trailing data", policy(rule(1, untagged+countOne, expire)) + ` {}`, "", "data after"},
		{"too long", policy(rule(1, untagged+countOne, expire)) + strings.Repeat(" ", lifecycle.MaxPolicyBytes), "", "at most 30720"},
		{"no rules", `{}`, "rules", "required"},
		{"empty rules", `{"rules": []}`, "rules", "at least one rule"},
		{"rules not an array", `{"rules": {}}`, "rules", "array"},
		{"too many rules", policy(func() []string {
			var rs []string
			for i := range 51 {
				rs = append(rs, rule(i+1, fmt.Sprintf(`"tagStatus": "tagged", "tagPrefixList": ["p%d"], `, i)+countOne, expire))
			}
			return rs
		}()...), "rules", "at most 50"},
		{"unknown top field", `{"rules": [` + rule(1, untagged+countOne, expire) + `], "version": 1}`, "version", "unknown field"},
		{"unknown rule field", `{"rules": [{"rulePriority": 1, "priority": 2, "selection": {` + untagged + countOne + `}, "action": {"type": "expire"}}]}`, "rules[1].priority", "unknown field"},
		{"unknown selection field", policy(rule(1, untagged+countOne+`, "tagSuffixList": ["x"]`, expire)), "rules[1].selection.tagSuffixList", "unknown field"},
		{"case differs", policy(rule(1, `"TagStatus": "untagged", `+countOne, expire)), "rules[1].selection.TagStatus", "case-sensitive"},
		{"duplicate key", policy(rule(1, untagged+countOne+`, "countNumber": 2`, expire)), "rules[1].selection.countNumber", "twice"},
		{"rule not an object", `{"rules": [1]}`, "rules[1]", "JSON object"},
		{"priority missing", `{"rules": [{"selection": {` + untagged + countOne + `}, "action": {"type": "expire"}}]}`, "rules[1].rulePriority", "required"},
		{"priority zero", policy(rule(0, untagged+countOne, expire)), "rules[1].rulePriority", "positive"},
		{"priority negative", policy(rule(-3, untagged+countOne, expire)), "rules[1].rulePriority", "positive"},
		{"priority fraction", `{"rules": [{"rulePriority": 1.5, "selection": {` + untagged + countOne + `}, "action": {"type": "expire"}}]}`, "rules[1].rulePriority", "whole number"},
		{"priority string", `{"rules": [{"rulePriority": "1", "selection": {` + untagged + countOne + `}, "action": {"type": "expire"}}]}`, "rules[1].rulePriority", "integer"},
		{"priority too big", policy(rule(1<<31, untagged+countOne, expire)), "rules[1].rulePriority", "up to 2147483647"},
		{"priorities not unique", policy(rule(1, untagged+countOne, expire), rule(1, prodPrefix+countOne, expire)), "rules[2].rulePriority", "unique"},
		{"description not a string", `{"rules": [{"rulePriority": 1, "description": 5, "selection": {` + untagged + countOne + `}, "action": {"type": "expire"}}]}`, "rules[1].description", "string"},
		{"selection missing", `{"rules": [{"rulePriority": 1, "action": {"type": "expire"}}]}`, "rules[1].selection", "required"},
		{"selection not an object", `{"rules": [{"rulePriority": 1, "selection": [], "action": {"type": "expire"}}]}`, "rules[1].selection", "JSON object"},
		{"tagStatus missing", policy(rule(1, countOne, expire)), "rules[1].selection.tagStatus", "required"},
		{"tagStatus unknown", policy(rule(1, `"tagStatus": "TAGGED", `+countOne, expire)), "rules[1].selection.tagStatus", `"tagged", "untagged" or "any"`},
		{"tagged without a list", policy(rule(1, `"tagStatus": "tagged", `+countOne, expire)), "rules[1].selection", "needs a tagPatternList or a tagPrefixList"},
		{"both lists", policy(rule(1, `"tagStatus": "tagged", "tagPrefixList": ["a"], "tagPatternList": ["b*"], `+countOne, expire)), "rules[1].selection", "exclude each other"},
		{"untagged with a list", policy(rule(1, `"tagStatus": "untagged", "tagPrefixList": ["a"], `+countOne, expire)), "rules[1].selection", "omit tagPatternList and tagPrefixList"},
		{"any with a list", policy(rule(1, `"tagStatus": "any", "tagPatternList": ["a*"], `+countOne, expire)), "rules[1].selection", "omit"},
		{"empty list", policy(rule(1, `"tagStatus": "tagged", "tagPrefixList": [], `+countOne, expire)), "rules[1].selection.tagPrefixList", "must not be empty"},
		{"list not strings", policy(rule(1, `"tagStatus": "tagged", "tagPrefixList": [1], `+countOne, expire)), "rules[1].selection.tagPrefixList", "array of strings"},
		{"empty entry", policy(rule(1, `"tagStatus": "tagged", "tagPatternList": ["a*", ""], `+countOne, expire)), "rules[1].selection.tagPatternList[2]", "must not be empty"},
		{"five wildcards", policy(rule(1, `"tagStatus": "tagged", "tagPatternList": ["test*1*2*3*4*5*6"], `+countOne, expire)), "rules[1].selection.tagPatternList[1]", "at most 4"},
		{"wildcard in a prefix", policy(rule(1, `"tagStatus": "tagged", "tagPrefixList": ["prod*"], `+countOne, expire)), "rules[1].selection.tagPrefixList[1]", "use tagPatternList"},
		{"not a tag character", policy(rule(1, `"tagStatus": "tagged", "tagPatternList": ["prod v1*"], `+countOne, expire)), "rules[1].selection.tagPatternList[1]", "cannot appear in a tag"},
		{"same prefixes twice", policy(rule(1, `"tagStatus": "tagged", "tagPrefixList": ["a", "b"], `+countOne, expire), rule(2, `"tagStatus": "tagged", "tagPrefixList": ["b", "a"], `+since14, expire)), "rules[2].selection", "same tags as rules[1]"},
		{"two untagged rules", policy(rule(1, untagged+countOne, expire), rule(2, untagged+since14, expire)), "rules[2].selection.tagStatus", "only one rule"},
		{"any not last", policy(rule(2, `"tagStatus": "any", `+countOne, expire), rule(1, untagged+since14, expire), rule(3, prodPrefix+countOne, expire)), "rules[1].rulePriority", "highest rulePriority"},
		{"two any rules", policy(rule(1, `"tagStatus": "any", `+countOne, expire), rule(2, `"tagStatus": "any", `+since14, expire)), "rules[2].selection.tagStatus", "only one rule"},
		{"countType missing", policy(rule(1, untagged+`"countNumber": 1`, expire)), "rules[1].selection.countType", "required"},
		{"countType unknown", policy(rule(1, untagged+`"countType": "imageCountLessThan", "countNumber": 1`, expire)), "rules[1].selection.countType", "must be"},
		{"countUnit with a count", policy(rule(1, untagged+countOne+`, "countUnit": "days"`, expire)), "rules[1].selection.countUnit", "must be omitted"},
		{"countUnit missing", policy(rule(1, untagged+`"countType": "sinceImagePushed", "countNumber": 1`, expire)), "rules[1].selection.countUnit", "required"},
		{"countUnit missing for pulled", policy(rule(1, untagged+`"countType": "sinceImagePulled", "countNumber": 1`, expire)), "rules[1].selection.countUnit", "required"},
		{"countUnit hours", policy(rule(1, untagged+`"countType": "sinceImagePushed", "countUnit": "hours", "countNumber": 1`, expire)), "rules[1].selection.countUnit", `only unit is "days"`},
		{"countNumber missing", policy(rule(1, untagged+`"countType": "imageCountMoreThan"`, expire)), "rules[1].selection.countNumber", "required"},
		{"countNumber zero", policy(rule(1, untagged+`"countType": "imageCountMoreThan", "countNumber": 0`, expire)), "rules[1].selection.countNumber", "positive"},
		{"action missing", `{"rules": [{"rulePriority": 1, "selection": {` + untagged + countOne + `}}]}`, "rules[1].action", "required"},
		{"action type missing", policy(rule(1, untagged+countOne, ``)), "rules[1].action.type", "required"},
		{"action unknown", policy(rule(1, untagged+countOne, `"type": "delete"`)), "rules[1].action.type", `"expire"`},
		// ECR's archive constructs: berth has no archive.
		{"transition", policy(rule(1, untagged+countOne, `"type": "transition", "targetStorageClass": "archive"`)), "rules[1].action.type", "does not archive"},
		{"targetStorageClass", policy(rule(1, untagged+countOne, `"type": "expire", "targetStorageClass": "archive"`)), "rules[1].action.targetStorageClass", "does not archive"},
		{"storageClass archive", policy(rule(1, untagged+countOne+`, "storageClass": "archive"`, expire)), "rules[1].selection.storageClass", "does not archive"},
		{"storageClass unknown", policy(rule(1, untagged+countOne+`, "storageClass": "glacier"`, expire)), "rules[1].selection.storageClass", `"standard"`},
		{"sinceImageTransitioned", policy(rule(1, untagged+`"countType": "sinceImageTransitioned", "countUnit": "days", "countNumber": 1`, expire)), "rules[1].selection.countType", "does not archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lifecycle.Parse([]byte(tc.text))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.text)
			}
			if !errors.Is(err, lifecycle.ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if tc.field == "" {
				return
			}
			var ve *lifecycle.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("%v is not a *ValidationError", err)
			}
			for _, p := range ve.Problems {
				if p.Field == tc.field && strings.Contains(p.Message, tc.says) {
					return
				}
			}
			t.Errorf("no problem on %s saying %q in %+v", tc.field, tc.says, ve.Problems)
		})
	}
}

// TestParseAllProblems: one round reports every problem, each once.
func TestParseAllProblems(t *testing.T) {
	_, err := lifecycle.Parse([]byte(policy(
		rule(0, `"tagStatus": "tagged", `+countOne, `"type": "transition"`),
		rule(2, untagged+`"countType": "sinceImagePushed", "countNumber": 1`, expire),
	)))
	var ve *lifecycle.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err %v", err)
	}
	var fields []string
	for _, p := range ve.Problems {
		fields = append(fields, p.Field)
	}
	want := "rules[1].rulePriority rules[1].action.type rules[1].selection rules[2].selection.countUnit"
	if got := strings.Join(fields, " "); got != want {
		t.Errorf("problems on %s, want %s\n%v", got, want, err)
	}
}
