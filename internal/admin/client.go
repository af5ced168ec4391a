package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// ErrUnauthorized is a running berth's 401 to Client: no credentials, or wrong ones.
var ErrUnauthorized = errors.New("unauthorized")

// Client is API over a running berth's admin API, for `berth ... --server URL`. Its errors wrap
// the same sentinels as Service's (from the answer's status), with the server's message.
type Client struct {
	base     string // scheme://host[:port], no trailing slash
	user     string
	password string
	http     *http.Client
}

var _ API = (*Client)(nil)

// NewClient returns a client of the berth at server (a URL, or host:port for plain HTTP) that
// logs in with Basic credentials (none when user is ""). hc nil is http.DefaultClient.
func NewClient(server, user, password string, hc *http.Client) (*Client, error) {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", server, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("--server %q: want http(s)://HOST[:PORT]", server)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u.Scheme + "://" + u.Host, user: user, password: password, http: hc}, nil
}

// do sends a request with body (JSON-encoded unless nil) and decodes a 2xx answer into out
// (unless nil); other answers become errors.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach berth at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if resp.StatusCode/100 == 2 {
		if out == nil || resp.StatusCode == http.StatusNoContent {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not what the admin API sends: %w", method, u, err)
		}
		return nil
	}
	return answerError(resp, data)
}

// answerError turns an error answer back into the sentinel its status stands for.
func answerError(resp *http.Response, data []byte) error {
	var doc struct {
		Errors []oci.Error `json:"errors"`
	}
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &doc) == nil && len(doc.Errors) > 0 {
		var parts []string
		for _, e := range doc.Errors {
			parts = append(parts, e.Message)
		}
		msg = strings.Join(parts, "; ")
	}
	var kind error
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		kind = ErrInvalid
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: %s: give --username (and the password in $BERTH_PASSWORD or with --password-stdin) of an admin of that berth", ErrUnauthorized, msg)
	case http.StatusForbidden:
		kind = ErrDenied
	case http.StatusNotFound:
		kind = metadata.ErrNotFound
	case http.StatusConflict:
		kind = metadata.ErrExists
	case http.StatusServiceUnavailable:
		kind = ErrUnavailable
	default:
		return fmt.Errorf("berth answered %s: %s", resp.Status, msg)
	}
	// The server's message already says what kind it is ("invalid request: ...").
	return &answered{kind: kind, msg: msg}
}

// answered is an error answer: its message as the server wrote it, matching its kind.
type answered struct {
	kind error
	msg  string
}

func (e *answered) Error() string { return e.msg }
func (e *answered) Unwrap() error { return e.kind }

// ListAccounts implements API.
func (c *Client) ListAccounts(ctx context.Context, kind string) ([]Account, error) {
	var q url.Values
	if kind != "" {
		q = url.Values{"kind": {kind}}
	}
	var out accountList
	if err := c.do(ctx, http.MethodGet, "/berth/v1/accounts", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Accounts, nil
}

// Account implements API.
func (c *Client) Account(ctx context.Context, name string) (*Account, error) {
	var out Account
	if err := c.do(ctx, http.MethodGet, "/berth/v1/accounts/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateUser implements API.
func (c *Client) CreateUser(ctx context.Context, u NewUser) (*Account, string, error) {
	var out created
	if err := c.do(ctx, http.MethodPost, "/berth/v1/accounts", nil, u, &out); err != nil {
		return nil, "", err
	}
	return out.Account, out.Password, nil
}

// CreateRobot implements API.
func (c *Client) CreateRobot(ctx context.Context, r NewRobot) (*Account, string, error) {
	var out created
	if err := c.do(ctx, http.MethodPost, "/berth/v1/robots", nil, r, &out); err != nil {
		return nil, "", err
	}
	return out.Account, out.Secret, nil
}

// SetPassword implements API.
func (c *Client) SetPassword(ctx context.Context, name, password string) (string, error) {
	var out passwordBody
	err := c.do(ctx, http.MethodPut, "/berth/v1/accounts/"+url.PathEscape(name)+"/password", nil, passwordBody{password}, &out)
	return out.Password, err
}

// SetGroups implements API.
func (c *Client) SetGroups(ctx context.Context, name string, groups []string) (*Account, error) {
	if groups == nil {
		groups = []string{}
	}
	var out Account
	if err := c.do(ctx, http.MethodPatch, "/berth/v1/accounts/"+url.PathEscape(name), nil, accountPatch{&groups}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteAccount implements API.
func (c *Client) DeleteAccount(ctx context.Context, name, kind string) error {
	var q url.Values
	if kind != "" {
		q = url.Values{"kind": {kind}}
	}
	return c.do(ctx, http.MethodDelete, "/berth/v1/accounts/"+url.PathEscape(name), q, nil, nil)
}

// ListGrants implements API.
func (c *Client) ListGrants(ctx context.Context) ([]Grant, error) {
	var out grantList
	if err := c.do(ctx, http.MethodGet, "/berth/v1/grants", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Grants, nil
}

// Grant implements API.
func (c *Client) Grant(ctx context.Context, subject, pattern string, actions []string) (*Grant, error) {
	var out Grant
	if err := c.do(ctx, http.MethodPost, "/berth/v1/grants", nil, grantBody{subject, pattern, actions}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke implements API.
func (c *Client) Revoke(ctx context.Context, subject, pattern string, actions []string) error {
	q := url.Values{"subject": {subject}, "pattern": {pattern}}
	if len(actions) > 0 {
		q.Set("actions", strings.Join(actions, ","))
	}
	return c.do(ctx, http.MethodDelete, "/berth/v1/grants", q, nil, nil)
}

// Revalidate implements API.
func (c *Client) Revalidate(ctx context.Context, repository, tag string) (*Revalidation, error) {
	var out Revalidation
	if err := c.do(ctx, http.MethodPost, "/berth/v1/cache/revalidate", nil, revalidateBody{repository, tag}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Evict implements API.
func (c *Client) Evict(ctx context.Context, repository, reference string) (*Eviction, error) {
	var out Eviction
	if err := c.do(ctx, http.MethodPost, "/berth/v1/cache/evict", nil, evictBody{repository, reference}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LifecyclePreview implements API.
func (c *Client) LifecyclePreview(ctx context.Context, repository string) ([]Expiry, error) {
	var q url.Values
	if repository != "" {
		q = url.Values{"repository": {repository}}
	}
	var out expiryList
	if err := c.do(ctx, http.MethodGet, "/berth/v1/lifecycle/preview", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Expired, nil
}
