<?php
// A small application with native PHP sessions, served by `php -S ... router.php` as one node of
// a test farm. Where sessions live (one directory per node, or one shared by all) and whether
// `session.use_strict_mode` is on are set by the command line, not here.
//
//   GET  /health  200 "ok <node> <instance>", no session
//   POST /login   starts a session, regenerates its id, stores the user (form field `user`),
//                 302 to /me
//   GET  /me      200 with the user, or 302 to /login when the session holds none
//   GET  /logout  destroys the session and deletes the cookie, 302 to /login
//   GET  /anon    starts a session without signing in, 200
//
// Every answer names the node in `X-Served-By`. The node's name and a token for this very process
// (so a test can tell its own server from whatever else holds the port) come from the environment.

declare(strict_types=1);

$node = getenv('SESSIONWATCH_PHP_NODE');
if (!is_string($node) || $node === '') {
    $node = 'php';
}
header('X-Served-By: ' . $node);
$instance = getenv('SESSIONWATCH_PHP_INSTANCE');
if (!is_string($instance)) {
    $instance = '';
}

$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
if (!is_string($path) || $path === '') {
    $path = '/';
}
$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';

function reply(int $status, string $body): void
{
    http_response_code($status);
    header('Content-Type: text/plain; charset=utf-8');
    echo $body, "\n";
}

function redirect(string $to): void
{
    http_response_code(302);
    header('Location: ' . $to);
}

function posted_user(): string
{
    $user = $_POST['user'] ?? null;
    if (!is_string($user)) {
        // Read the form whatever content type the client sent.
        $form = [];
        parse_str((string) file_get_contents('php://input'), $form);
        $user = $form['user'] ?? null;
    }
    return is_string($user) && $user !== '' ? $user : 'user';
}

switch ($method . ' ' . $path) {
    case 'GET /health':
    case 'HEAD /health':
        reply(200, trim('ok ' . $node . ' ' . $instance));
        break;

    case 'POST /login':
        session_start();
        session_regenerate_id(true);
        $_SESSION['user'] = posted_user();
        redirect('/me');
        break;

    case 'GET /me':
    case 'HEAD /me':
        session_start();
        $user = $_SESSION['user'] ?? null;
        if (is_string($user)) {
            reply(200, $user);
        } else {
            redirect('/login');
        }
        break;

    case 'GET /logout':
        session_start();
        $_SESSION = [];
        $params = session_get_cookie_params();
        setcookie(session_name(), '', [
            'expires' => 1,
            'path' => $params['path'],
            'domain' => $params['domain'],
            'secure' => $params['secure'],
            'httponly' => $params['httponly'],
        ]);
        session_destroy();
        redirect('/login');
        break;

    case 'GET /anon':
        session_start();
        $_SESSION['visits'] = (int) ($_SESSION['visits'] ?? 0) + 1;
        reply(200, 'anonymous');
        break;

    default:
        reply(404, 'not found');
}
