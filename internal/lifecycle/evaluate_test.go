package lifecycle_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/lifecycle"
	"github.com/berth/berth/internal/oci"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) time.Time { return now.Add(-d) }

const day = 24 * time.Hour

// img names an image by a letter, as ECR's examples do; its digest is "sha256:" and the name.
func img(name string, pushed time.Time, tags ...string) lifecycle.Image {
	return lifecycle.Image{Digest: oci.Digest("sha256:" + name), Tags: tags, Pushed: pushed}
}

func mustParse(t *testing.T, text string) *lifecycle.Policy {
	t.Helper()
	p, err := lifecycle.Parse([]byte(text))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, text)
	}
	return p
}

// expired renders decisions as "A:1 B:2" (image, rule priority), in their order.
func expired(ds []lifecycle.Decision) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%s:%d", strings.TrimPrefix(string(d.Digest), "sha256:"), d.RulePriority))
	}
	return strings.Join(parts, " ")
}

// TestECRExamples runs the policies of ECR's "Examples of lifecycle policies" on the repositories
// the page describes, with the outcomes it states, written out by hand. The first two examples
// show a policy but no repository; theirs are made up here to exercise what the policy says.
func TestECRExamples(t *testing.T) {
	const multipleRules = `{"rules": [
		{"rulePriority": 1, "description": "Rule 1", "selection": {"tagStatus": "tagged", "tagPrefixList": ["%s"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
		{"rulePriority": 2, "description": "Rule 2", "selection": {"tagStatus": "tagged", "tagPrefixList": ["%s"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}`
	multipleRulesRepo := []lifecycle.Image{
		img("A", ago(10*day), "beta-1", "prod-1"),
		img("B", ago(9*day), "beta-2", "prod-2"),
		img("C", ago(8*day), "beta-3"),
	}
	for _, tc := range []struct {
		name   string
		policy string
		images []lifecycle.Image
		want   string
	}{{
		// "Filtering on image age": expires images with a tag matching prod* older than 14 days.
		name: "image age",
		policy: `{"rules": [{"rulePriority": 1, "description": "Expire images older than 14 days",
			"selection": {"tagStatus": "tagged", "tagPatternList": ["prod*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
			"action": {"type": "expire"}}]}`,
		images: []lifecycle.Image{
			img("A", ago(15*day), "prod-1"),      // older than 14 days: expired
			img("B", ago(13*day), "prod-2"),      // younger: kept
			img("C", ago(20*day), "dev-1"),       // old, but not prod*: kept
			img("D", ago(30*day)),                // untagged: kept
			img("E", ago(16*day), "x", "prod-3"), // one of its tags matches: expired
			img("F", ago(17*day), "preprod"),     // the pattern covers the whole tag: kept
		},
		want: "E:1 A:1", // oldest first
	}, {
		// "Filtering on image count": keeps only one untagged image.
		name: "image count",
		policy: `{"rules": [{"rulePriority": 1, "description": "Keep only one untagged image, expire all others",
			"selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
			"action": {"type": "expire"}}]}`,
		images: []lifecycle.Image{
			img("A", ago(3*day)), img("B", ago(2*day)), img("C", ago(1*day)), img("D", ago(5*day), "v1"),
		},
		want: "A:1 B:1",
	}, {
		// "Filtering on multiple rules", example A: rule 1 (prod) marks A; rule 2 (beta) marks A and
		// B, but A was seen by rule 1 and expiring B would violate rule 1. Result: A is expired.
		name:   "multiple rules A",
		policy: fmt.Sprintf(multipleRules, "prod", "beta"),
		images: multipleRulesRepo,
		want:   "A:1",
	}, {
		// Example B, the priorities swapped: rule 1 (beta) sees all three images and marks A and B;
		// rule 2 (prod) sees nothing new. Result: A and B are expired.
		name:   "multiple rules B",
		policy: fmt.Sprintf(multipleRules, "beta", "prod"),
		images: multipleRulesRepo,
		want:   "A:1 B:1",
	}, {
		// "Filtering on multiple tags in a single rule", example A: images must match every prefix;
		// the rule sees C and F and expires those older than five days. Result: C is expired.
		name: "multiple tags A",
		policy: `{"rules": [{"rulePriority": 1, "description": "Rule 1",
			"selection": {"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "sinceImagePushed", "countNumber": 5, "countUnit": "days"},
			"action": {"type": "expire"}}]}`,
		images: []lifecycle.Image{
			img("A", ago(12*day), "alpha-1"),
			img("B", ago(11*day), "beta-1"),
			img("C", ago(10*day), "alpha-2", "beta-2"),
			img("D", ago(4*day), "alpha-3"),
			img("E", ago(3*day), "beta-3"),
			img("F", ago(2*day), "alpha-4", "beta-4"),
		},
		want: "C:1",
	}, {
		// The same example as the current page writes it, with tagPatternList ["alpha*", "beta*"].
		name: "multiple tags A, patterns",
		policy: `{"rules": [{"rulePriority": 1, "description": "Rule 1",
			"selection": {"tagStatus": "tagged", "tagPatternList": ["alpha*", "beta*"], "countType": "sinceImagePushed", "countNumber": 5, "countUnit": "days"},
			"action": {"type": "expire"}}]}`,
		images: []lifecycle.Image{
			img("A", ago(12*day), "alpha-1"),
			img("B", ago(11*day), "beta-1"),
			img("C", ago(10*day), "alpha-2", "beta-2"),
			img("D", ago(4*day), "alpha-3"),
			img("E", ago(3*day), "beta-3"),
			img("F", ago(2*day), "alpha-4", "beta-4"),
		},
		want: "C:1",
	}, {
		// Example B: tags are not exclusive; the rule sees all three images (each has an alpha and
		// a beta tag) and keeps the newest. Result: A and B are expired.
		name: "multiple tags B",
		policy: `{"rules": [{"rulePriority": 1, "description": "Rule 1",
			"selection": {"tagStatus": "tagged", "tagPrefixList": ["alpha", "beta"], "countType": "imageCountMoreThan", "countNumber": 1},
			"action": {"type": "expire"}}]}`,
		images: []lifecycle.Image{
			img("A", ago(10*day), "alpha-1", "beta-1", "gamma-1"),
			img("B", ago(9*day), "alpha-2", "beta-2"),
			img("C", ago(8*day), "alpha-3", "beta-3", "gamma-2"),
		},
		want: "A:1 B:1",
	}, {
		// "Filtering on all images", example A: one rule on every image keeps the newest.
		// Result: A, B and C are expired.
		name: "all images A",
		policy: `{"rules": [{"rulePriority": 1, "description": "Rule 1",
			"selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
			"action": {"type": "expire"}}]}`,
		images: []lifecycle.Image{
			img("A", ago(4*day), "alpha-1"),
			img("B", ago(3*day), "beta-1"),
			img("C", ago(2*day)),
			img("D", ago(1*day), "alpha-2"),
		},
		want: "A:1 B:1 C:1",
	}, {
		// Example B combines the three kinds of rule. Rule 1 (alpha*) sees A and C and marks A;
		// rule 2 (untagged, older than a day) sees B and E and marks B; rule 3 (any, keep one) sees
		// all five, keeps the newest, and can mark only D, as higher rules identified the others.
		// Result: A, B and D are expired. The page pushes D and E "1 day ago"; for its outcome E
		// must be the newer, and not older than a day.
		name: "all images B",
		policy: `{"rules": [
			{"rulePriority": 1, "description": "Rule 1", "selection": {"tagStatus": "tagged", "tagPatternList": ["alpha*"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
			{"rulePriority": 2, "description": "Rule 2", "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}},
			{"rulePriority": 3, "description": "Rule 3", "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}`,
		images: []lifecycle.Image{
			img("A", ago(4*day), "alpha-1", "beta-1"),
			img("B", ago(3*day)),
			img("C", ago(2*day), "alpha-2"),
			img("D", ago(day+time.Hour), "git-hash"),
			img("E", ago(day-time.Hour)),
		},
		want: "A:1 B:2 D:3",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := expired(lifecycle.Evaluate(mustParse(t, tc.policy), tc.images, now))
			if got != tc.want {
				t.Errorf("expired %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPulled: sinceImagePulled counts from the last pull, and from the push for an image never
// pulled.
func TestPulled(t *testing.T) {
	p := mustParse(t, `{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 30}, "action": {"type": "expire"}}]}`)
	a := img("A", ago(100*day), "old-but-pulled")
	a.Pulled = ago(2 * day)
	b := img("B", ago(100*day), "old-pulled-long-ago")
	b.Pulled = ago(31 * day)
	c := img("C", ago(31*day), "never-pulled")
	d := img("D", ago(29*day), "recent-never-pulled")
	if got, want := expired(lifecycle.Evaluate(p, []lifecycle.Image{a, b, c, d}, now)), "B:1 C:1"; got != want {
		t.Errorf("expired %q, want %q", got, want)
	}
}

// TestTies: images pushed at the same instant are ordered by digest, the smaller counting as the
// newer, whatever order they come in.
func TestTies(t *testing.T) {
	p := mustParse(t, `{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}`)
	at := ago(day)
	for _, images := range [][]lifecycle.Image{
		{img("A", at), img("B", at), img("C", at)},
		{img("C", at), img("B", at), img("A", at)},
		{img("B", at), img("C", at), img("A", at)},
	} {
		if got := expired(lifecycle.Evaluate(p, images, now)); got != "B:1 C:1" {
			t.Errorf("expired %q, want B:1 C:1", got)
		}
	}
}

// TestBoundary: "older than N days" is strict; an image exactly N days old stays.
func TestBoundary(t *testing.T) {
	p := mustParse(t, `{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}, "action": {"type": "expire"}}]}`)
	got := expired(lifecycle.Evaluate(p, []lifecycle.Image{img("A", ago(7*day)), img("B", ago(7*day+time.Second))}, now))
	if got != "B:1" {
		t.Errorf("expired %q, want B:1", got)
	}
}

// TestIndexes: an image an index references is kept while the index is; an index expired in the
// same evaluation releases its children, and is listed before them.
func TestIndexes(t *testing.T) {
	untaggedAny := mustParse(t, `{"rules": [
		{"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
		{"rulePriority": 2, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}, "action": {"type": "expire"}}]}`)
	child := func(name string, pushed time.Time, parents ...string) lifecycle.Image {
		i := img(name, pushed)
		for _, p := range parents {
			i.Parents = append(i.Parents, oci.Digest("sha256:"+p))
		}
		return i
	}
	for _, tc := range []struct {
		name   string
		images []lifecycle.Image
		want   string
	}{{
		name: "children of a kept index stay",
		images: []lifecycle.Image{
			img("I", ago(5*day), "v2"), child("a", ago(5*day), "I"), child("b", ago(5*day), "I"),
			child("z", ago(5*day)), // no index: expired
		},
		want: "z:2",
	}, {
		name: "children of an expired index go with it, after it",
		images: []lifecycle.Image{
			img("I", ago(5*day), "v1"), img("J", ago(4*day), "v2"),
			child("a", ago(6*day), "I"), child("b", ago(6*day), "I"),
		},
		want: "I:1 a:2 b:2",
	}, {
		name: "a child shared with a kept index stays",
		images: []lifecycle.Image{
			img("I", ago(5*day), "v1"), img("J", ago(4*day), "v2"),
			child("a", ago(6*day), "I", "J"), child("b", ago(6*day), "I"),
		},
		want: "I:1 b:2",
	}, {
		name: "nested: a kept index keeps its child index, which keeps its children",
		images: []lifecycle.Image{
			img("I", ago(5*day), "v2"), child("N", ago(5*day), "I"), child("a", ago(5*day), "N"),
		},
		want: "",
	}, {
		name: "nested, all expired: top index first, then the inner one, then its child",
		images: []lifecycle.Image{
			img("J", ago(1*day), "v9"),
			img("I", ago(5*day), "v1"), child("a", ago(9*day), "N"), child("N", ago(5*day), "I"),
		},
		want: "I:1 N:2 a:2",
	}, {
		name: "an index not among the images counts as kept",
		images: []lifecycle.Image{
			child("a", ago(5*day), "elsewhere"),
		},
		want: "",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := expired(lifecycle.Evaluate(untaggedAny, tc.images, now)); got != tc.want {
				t.Errorf("expired %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGlob(t *testing.T) {
	p := func(pattern string) *lifecycle.Policy {
		return mustParse(t, fmt.Sprintf(`{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPatternList": [%q], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}`, pattern))
	}
	for _, tc := range []struct {
		pattern, tag string
		match        bool
	}{
		{"prod", "prod", true}, {"prod", "prod1", false}, {"prod*", "prod", true}, {"prod*", "xprod", false},
		{"*prod", "preprod", true}, {"*prod", "prod-1", false}, {"*-rc*", "v1-rc2", true}, {"*-rc*", "v1rc2", false},
		{"*test*1*2*3", "atestb1c2d3", true}, {"*test*1*2*3", "test123", true}, {"*test*1*2*3", "test1234", false},
		{"a*a", "a", false}, {"a*a", "aa", true}, {"*", "anything", true}, {"v*.*.*", "v1.2.3", true}, {"v*.*.*", "v1.2", false},
	} {
		// Two images with the tag, the older expired if the pattern matches.
		imgs := []lifecycle.Image{img("old", ago(2*day), tc.tag), img("new", ago(day), tc.tag)}
		got := len(lifecycle.Evaluate(p(tc.pattern), imgs, now)) == 1
		if got != tc.match {
			t.Errorf("pattern %q on tag %q: matched %v, want %v", tc.pattern, tc.tag, got, tc.match)
		}
	}
}

// TestProperties evaluates random valid policies over random repositories and checks what must
// hold whatever the inputs: each image expired at most once, by a rule that selects it and that no
// higher rule's selection shadows; a count rule keeps at least its countNumber newest; an age rule
// expires only images past its age; no kept index loses a child; indexes come before children;
// and the result does not depend on the order of the images.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tags := []string{"prod-1", "prod-2", "beta-1", "beta-2", "v1.0", "v1.1", "v2.0", "latest", "dev"}
	for round := range 2000 {
		p := randomPolicy(t, rng, tags)
		images := randomImages(rng, tags)
		ds := lifecycle.Evaluate(p, images, now)

		byDigest := map[oci.Digest]lifecycle.Image{}
		for _, i := range images {
			byDigest[i.Digest] = i
		}
		rules := map[int]lifecycle.Rule{}
		for _, r := range p.Rules {
			rules[r.Priority] = r
		}
		expiredBy := map[oci.Digest]int{}
		pos := map[oci.Digest]int{}
		for k, d := range ds {
			if _, twice := expiredBy[d.Digest]; twice {
				t.Fatalf("round %d: %s expired twice", round, d.Digest)
			}
			expiredBy[d.Digest], pos[d.Digest] = d.RulePriority, k
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("round %d: %s\npolicy %+v\nimages %+v\ndecisions %s", round, fmt.Sprintf(format, args...), p.Rules, images, expired(ds))
		}
		for d, prio := range expiredBy {
			im, r := byDigest[d], rules[prio]
			if !selects(r, im) {
				fail("%s expired by rule %d, which does not select it", d, prio)
			}
			for _, higher := range p.Rules {
				if higher.Priority < prio && selects(higher, im) {
					fail("%s expired by rule %d, but rule %d selects it first", d, prio, higher.Priority)
				}
			}
			switch r.CountType {
			case lifecycle.ImageCountMoreThan:
				newer := 0
				for _, o := range images {
					if selects(r, o) && (o.Pushed.After(im.Pushed) || o.Pushed.Equal(im.Pushed) && o.Digest < d) {
						newer++
					}
				}
				if newer < r.CountNumber {
					fail("%s expired by rule %d (keep %d) with only %d newer images it selects", d, prio, r.CountNumber, newer)
				}
			case lifecycle.SinceImagePushed, lifecycle.SinceImagePulled:
				ref := im.Pushed
				if r.CountType == lifecycle.SinceImagePulled && !im.Pulled.IsZero() {
					ref = im.Pulled
				}
				if !ref.Before(now.AddDate(0, 0, -r.CountNumber)) {
					fail("%s expired by rule %d but is not older than %d days", d, prio, r.CountNumber)
				}
			}
			for _, parent := range im.Parents {
				if _, gone := expiredBy[parent]; !gone {
					fail("%s expired while its index %s is kept", d, parent)
				}
				if pos[parent] > pos[d] {
					fail("%s listed before its index %s", d, parent)
				}
			}
		}
		shuffled := slices.Clone(images)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if again := expired(lifecycle.Evaluate(p, shuffled, now)); again != expired(ds) {
			fail("shuffled images give %q", again)
		}
	}
}

// selects is the test's own reading of a rule's selection, written apart from the package's.
func selects(r lifecycle.Rule, im lifecycle.Image) bool {
	switch r.TagStatus {
	case lifecycle.Any:
		return true
	case lifecycle.Untagged:
		return len(im.Tags) == 0
	}
	for _, p := range r.TagPrefixes {
		ok := false
		for _, tag := range im.Tags {
			ok = ok || strings.HasPrefix(tag, p)
		}
		if !ok {
			return false
		}
	}
	for _, p := range r.TagPatterns {
		ok := false
		for _, tag := range im.Tags {
			// The generated patterns are a prefix and a trailing star, or an exact tag.
			if pre, star := strings.CutSuffix(p, "*"); star {
				ok = ok || strings.HasPrefix(tag, pre)
			} else {
				ok = ok || tag == p
			}
		}
		if !ok {
			return false
		}
	}
	return len(im.Tags) > 0
}

func randomPolicy(t *testing.T, rng *rand.Rand, tags []string) *lifecycle.Policy {
	for {
		var rules []string
		n := 1 + rng.IntN(4)
		untagged := false
		for i := range n {
			var sel string
			switch k := rng.IntN(4); {
			case k == 0 && !untagged:
				untagged = true
				sel = `"tagStatus": "untagged"`
			case k == 1 && i == n-1:
				sel = `"tagStatus": "any"`
			default:
				list := "tagPrefixList"
				entry := func() string { t := tags[rng.IntN(len(tags))]; return t[:1+rng.IntN(len(t))] }
				if rng.IntN(2) == 0 {
					list = "tagPatternList"
					entry = func() string {
						t := tags[rng.IntN(len(tags))]
						if rng.IntN(3) == 0 {
							return t
						}
						return t[:rng.IntN(len(t))] + "*"
					}
				}
				entries := []string{fmt.Sprintf("%q", entry())}
				if rng.IntN(3) == 0 {
					entries = append(entries, fmt.Sprintf("%q", entry()))
				}
				sel = fmt.Sprintf(`"tagStatus": "tagged", %q: [%s]`, list, strings.Join(entries, ", "))
			}
			switch rng.IntN(3) {
			case 0:
				sel += fmt.Sprintf(`, "countType": "imageCountMoreThan", "countNumber": %d`, 1+rng.IntN(4))
			case 1:
				sel += fmt.Sprintf(`, "countType": "sinceImagePushed", "countUnit": "days", "countNumber": %d`, 1+rng.IntN(20))
			default:
				sel += fmt.Sprintf(`, "countType": "sinceImagePulled", "countUnit": "days", "countNumber": %d`, 1+rng.IntN(20))
			}
			rules = append(rules, fmt.Sprintf(`{"rulePriority": %d, "selection": {%s}, "action": {"type": "expire"}}`, (i+1)*10, sel))
		}
		// Rules in a random order in the text: Parse orders them by priority.
		rng.Shuffle(len(rules), func(i, j int) { rules[i], rules[j] = rules[j], rules[i] })
		if p, err := lifecycle.Parse([]byte(`{"rules": [` + strings.Join(rules, ",") + `]}`)); err == nil {
			return p
		}
		// Two rules drew the same tag list, which ECR refuses; draw again.
	}
}

func randomImages(rng *rand.Rand, tags []string) []lifecycle.Image {
	n := rng.IntN(15)
	var images []lifecycle.Image
	for i := range n {
		im := lifecycle.Image{Digest: oci.Digest(fmt.Sprintf("sha256:%02d", i)), Pushed: ago(time.Duration(rng.IntN(30*24)) * time.Hour)}
		if rng.IntN(2) == 0 { // whole days: images pushed at the same time, which must not make the result depend on their order
			im.Pushed = ago(time.Duration(rng.IntN(10)) * day)
		}
		for range rng.IntN(3) {
			im.Tags = append(im.Tags, tags[rng.IntN(len(tags))])
		}
		if rng.IntN(2) == 0 {
			im.Pulled = ago(time.Duration(rng.IntN(30*24)) * time.Hour)
		}
		// Some images are referenced by earlier ones (indexes), which keeps references acyclic.
		for j := range i {
			if rng.IntN(8) == 0 {
				im.Parents = append(im.Parents, images[j].Digest)
			}
		}
		images = append(images, im)
	}
	return images
}
