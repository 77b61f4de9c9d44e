from api.routers.crud import crud_router
from core.commands import MenuIn, MenuUpdate
from core.models import Menu

router = crud_router(Menu, MenuIn, MenuUpdate, "menus", "menu")
