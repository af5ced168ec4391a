package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestLoadImmutability(t *testing.T) {
	c, err := Load(writeFile(t, `
immutability:
  - repositories: "team/*"
    mode: IMMUTABLE_WITH_EXCLUSION
    filters: ["latest", "dev-*"]
  - repositories: "*"
    mode: IMMUTABLE
`))
	if err != nil {
		t.Fatal(err)
	}
	want := TagRules{
		{Repositories: "team/*", Mode: ImmutableWithExclusion, Filters: []string{"latest", "dev-*"}},
		{Repositories: "*", Mode: Immutable},
	}
	if !reflect.DeepEqual(c.Immutability, want) {
		t.Errorf("Immutability = %+v, want %+v", c.Immutability, want)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	// Strict like the rest: a misspelt key is an error, not a rule that quietly does nothing.
	if _, err := Load(writeFile(t, "immutability:\n  - repository: app\n    mode: IMMUTABLE\n")); err == nil ||
		!strings.Contains(err.Error(), "repository") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestValidateImmutability(t *testing.T) {
	long := strings.Repeat("a", 128)
	for _, c := range []struct {
		name  string
		rules TagRules
		want  []string // parts of the error, one per problem; none when valid
	}{
		{"none", nil, nil},
		{"mutable", TagRules{{Repositories: "app", Mode: Mutable}}, nil},
		{"immutable", TagRules{{Repositories: "team/*", Mode: Immutable}}, nil},
		{"immutable with exclusion", TagRules{{Repositories: "*", Mode: ImmutableWithExclusion, Filters: []string{"latest"}}}, nil},
		{"mutable with exclusion", TagRules{{Repositories: "*/prod", Mode: MutableWithExclusion, Filters: []string{"v*", "release-*.*", "*-stable", "A_b.C-9", long}}}, nil},
		{"lowercase mode", TagRules{{Repositories: "app", Mode: "immutable"}}, []string{`immutability[0] (app): mode "immutable": want MUTABLE`}},
		{"no mode", TagRules{{Repositories: "app"}}, []string{`mode "": want`}},
		{"no pattern", TagRules{{Mode: Immutable}}, []string{"immutability[0] (): repositories: empty repository pattern"}},
		{"bad pattern", TagRules{{Repositories: "Team/*", Mode: Immutable}}, []string{`repository pattern "Team/*"`}},
		{"filters on IMMUTABLE", TagRules{{Repositories: "app", Mode: Immutable, Filters: []string{"latest"}}}, []string{"mode IMMUTABLE takes no filters"}},
		{"filters on MUTABLE", TagRules{{Repositories: "app", Mode: Mutable, Filters: []string{"latest"}}}, []string{"mode MUTABLE takes no filters"}},
		{"exclusion without filters", TagRules{{Repositories: "app", Mode: ImmutableWithExclusion}}, []string{"mode IMMUTABLE_WITH_EXCLUSION needs 1 to 5 filters, not 0"}},
		{"six filters", TagRules{{Repositories: "app", Mode: MutableWithExclusion, Filters: []string{"a", "b", "c", "d", "e", "f"}}}, []string{"needs 1 to 5 filters, not 6"}},
		{"empty filter", TagRules{{Repositories: "app", Mode: MutableWithExclusion, Filters: []string{""}}}, []string{`filter "": want 1 to 128 characters`}},
		{"long filter", TagRules{{Repositories: "app", Mode: MutableWithExclusion, Filters: []string{long + "a"}}}, []string{"want 1 to 128 characters"}},
		{"slash in filter", TagRules{{Repositories: "app", Mode: MutableWithExclusion, Filters: []string{"v1/*"}}}, []string{`filter "v1/*": "/" is not allowed`}},
		{"question mark in filter", TagRules{{Repositories: "app", Mode: MutableWithExclusion, Filters: []string{"v?"}}}, []string{`"?" is not allowed`}},
		// Every rule's problems are reported, each rule once with its index.
		{"two bad rules", TagRules{{Repositories: "app", Mode: "x"}, {Repositories: "b", Mode: Immutable, Filters: []string{"v"}}},
			[]string{"immutability[0] (app)", "immutability[1] (b)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := with(func(cfg *Config) { cfg.Immutability = c.rules })
			err := cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to contain %q", err, w)
				}
			}
			if n := strings.Count(err.Error(), "immutability["); n != len(c.want) && c.name == "two bad rules" {
				t.Errorf("%d rules reported, want %d: %v", n, len(c.want), err)
			}
		})
	}
}

func TestTagRulesImmutable(t *testing.T) {
	rules := TagRules{
		{Repositories: "team/app", Mode: Mutable},
		{Repositories: "team/*", Mode: ImmutableWithExclusion, Filters: []string{"latest", "dev-*"}},
		{Repositories: "prod/*", Mode: MutableWithExclusion, Filters: []string{"v*.*"}},
		{Repositories: "frozen", Mode: Immutable},
	}
	for _, c := range []struct {
		repo, tag string
		rule      string
		immutable bool
	}{
		// The first matching rule decides: team/app is MUTABLE though team/* would not be.
		{"team/app", "v1", "team/app MUTABLE", false},
		{"team/web", "v1", "team/* IMMUTABLE_WITH_EXCLUSION", true},
		{"team/web", "latest", "team/* IMMUTABLE_WITH_EXCLUSION", false},
		{"team/web", "dev-42", "team/* IMMUTABLE_WITH_EXCLUSION", false},
		{"team/web", "dev", "team/* IMMUTABLE_WITH_EXCLUSION", true}, // dev-* needs the dash
		{"team/a/b", "v1", "team/* IMMUTABLE_WITH_EXCLUSION", true},  // '*' crosses slashes, as in grants
		{"prod/api", "v1.2", "prod/* MUTABLE_WITH_EXCLUSION", true},
		{"prod/api", "v1", "prod/* MUTABLE_WITH_EXCLUSION", false},
		{"prod/api", "latest", "prod/* MUTABLE_WITH_EXCLUSION", false},
		{"frozen", "anything", "frozen IMMUTABLE", true},
		{"frozen/sub", "v1", "", false}, // no rule: MUTABLE
		{"other", "v1", "", false},
	} {
		rule, immutable := rules.Immutable(c.repo, c.tag)
		if immutable != c.immutable || (c.rule != "" && rule != c.rule) {
			t.Errorf("Immutable(%s, %s) = %q, %v; want %q, %v", c.repo, c.tag, rule, immutable, c.rule, c.immutable)
		}
	}
}
