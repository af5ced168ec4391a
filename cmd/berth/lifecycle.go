package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth/berth/internal/lifecycle"
)

// lifecycleCmd groups the commands of lifecycle policies (ECR's grammar).
func lifecycleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lifecycle",
		Short: "Lifecycle policies in Amazon ECR's JSON grammar",
	}
	cmd.AddCommand(lifecycleValidateCmd())
	return cmd
}

func lifecycleValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a lifecycle policy (FILE, or - for standard input) and say what each rule does",
		Long: "Parses FILE as an Amazon ECR lifecycle policy and checks it against ECR's rules. A valid policy is\n" +
			"printed rule by rule in the order the rules apply; an invalid one is refused with every problem,\n" +
			"one a line, on standard error, and the exit status is 1. It reads no registry.",
		Example: "  berth lifecycle validate policy.json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var text []byte
			var err error
			if name == "-" {
				// One byte past the limit is enough for Parse to say the policy is too long.
				text, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), lifecycle.MaxPolicyBytes+1))
				name = "standard input"
			} else {
				text, err = readLimited(name, lifecycle.MaxPolicyBytes+1)
			}
			if err != nil {
				return err
			}
			p, err := lifecycle.Parse(text)
			var ve *lifecycle.ValidationError
			if errors.As(err, &ve) {
				for _, pr := range ve.Problems {
					fmt.Fprintln(cmd.ErrOrStderr(), pr)
				}
				return fmt.Errorf("%s: invalid lifecycle policy: %d problem(s)", name, len(ve.Problems))
			} else if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: valid, %d rule(s), applied in this order:\n", name, len(p.Rules))
			for _, r := range p.Rules {
				fmt.Fprintf(out, "  %d: %s\n", r.Priority, describe(r))
			}
			return nil
		},
	}
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// describe says in words what a rule selects and expires.
func describe(r lifecycle.Rule) string {
	var sel string
	switch {
	case r.TagStatus == lifecycle.Any:
		sel = "all images"
	case r.TagStatus == lifecycle.Untagged:
		sel = "untagged images"
	case r.TagPatterns != nil:
		sel = "images with tags matching " + strings.Join(r.TagPatterns, " and ")
	default:
		sel = "images with tags starting " + strings.Join(r.TagPrefixes, " and ")
	}
	var what string
	switch r.CountType {
	case lifecycle.ImageCountMoreThan:
		what = fmt.Sprintf("keep the %d most recently pushed, expire the rest", r.CountNumber)
	case lifecycle.SinceImagePushed:
		what = fmt.Sprintf("expire those pushed more than %d day(s) ago", r.CountNumber)
	case lifecycle.SinceImagePulled:
		what = fmt.Sprintf("expire those not pulled for more than %d day(s) (never pulled: since their push)", r.CountNumber)
	}
	s := sel + ": " + what
	if r.Description != "" {
		s += fmt.Sprintf(" (%q)", r.Description)
	}
	return s
}
