// Scaffold: replaced by the page's implementation.
export function ChatPage() {
  return <h1>ChatPage</h1>;
}
