from mamaroom.cli import app

app(prog_name="mamaroom")
