package console

// routeAdmin registers the admin pages (admin.go).
func (c *Console) routeAdmin() {}
