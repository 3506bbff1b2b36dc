// Scaffold: replaced by the page's implementation.
export function DashboardPage() {
  return <h1>DashboardPage</h1>;
}
