package console

// routeAdminForms registers the admin forms (accounts, robots, grants, lifecycle preview), which
// call the admin service.
func (c *Console) routeAdminForms() {}

// formsReady reports whether the admin forms are served.
func (c *Console) formsReady() bool { return false }
